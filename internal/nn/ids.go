package nn

import "fmt"

// IDs holds the token ids (or targets) of one batch of B sequences of T
// tokens, flattened row-major: Data[b·T + t]. The ops that read it
// (Embedding, CrossEntropy) keep the pointer and read Data at every run, so
// the trainer refills Data in place (directly or with Set) between runs and
// the graph is built once. B and T fix the graph's shapes and must not change
// after an op has been built on the holder; ids are validated at every run, so
// a bad refill is an error from the machine's RunAll, not a panic.
type IDs struct {
	B, T int
	Data []int32
}

// NewIDs returns a zeroed holder for B×T ids. Non-positive sizes give a
// holder that every op constructor rejects with an error.
func NewIDs(B, T int) *IDs {
	ids := &IDs{B: B, T: T}
	if B > 0 && T > 0 {
		ids.Data = make([]int32, B*T)
	}
	return ids
}

// Set copies src into Data; src must hold exactly B·T ids.
func (ids *IDs) Set(src []int32) error {
	if err := ids.check("IDs.Set"); err != nil {
		return err
	}
	if len(src) != len(ids.Data) {
		return shapeErr("IDs.Set", "%d ids for a %d×%d batch", len(src), ids.B, ids.T)
	}
	copy(ids.Data, src)
	return nil
}

// check validates the holder's sizes.
func (ids *IDs) check(fn string) error {
	switch {
	case ids == nil:
		return fmt.Errorf("nn: %s: nil IDs: %w", fn, ErrShape)
	case ids.B <= 0 || ids.T <= 0:
		return shapeErr(fn, "IDs with B=%d, T=%d: both must be positive", ids.B, ids.T)
	case len(ids.Data) != ids.B*ids.T:
		return shapeErr(fn, "IDs holds %d ids, want B·T = %d·%d", len(ids.Data), ids.B, ids.T)
	}
	return nil
}
