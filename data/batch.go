package data

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
)

// Window is one row of a batch: T inputs and T targets, where Targets[i]
// is the token after Inputs[i] or IgnoreIndex where it carries no loss
// (prompt tokens, user turns, padding). Len is the number of real input
// tokens; positions from Len on are padding, which a causal model's real
// positions never attend to because padding only follows them.
type Window struct {
	Inputs  []int32
	Targets []int32
	Len     int
}

// Trained returns how many of w's targets carry loss.
func (w Window) Trained() int {
	n := 0
	for _, t := range w.Targets {
		if t != IgnoreIndex {
			n++
		}
	}
	return n
}

// Pack concatenates the examples and cuts the stream into windows of T
// inputs; consecutive windows overlap by one token, so every stream token
// after the first is a target once. The last, partial window is padded
// with pad. Packed windows let an example attend to the one before it, as
// packing without per-example attention masks does everywhere.
func Pack(examples []Example, T int, pad int32) ([]Window, error) {
	if T < 1 {
		return nil, fmt.Errorf("data: window length %d < 1: %w", T, ErrData)
	}
	var ids []int32
	var train []bool
	for _, e := range examples {
		ids = append(ids, e.IDs...)
		train = append(train, e.Train...)
	}
	var out []Window
	for start := 0; start+1 < len(ids); start += T {
		end := min(start+T+1, len(ids))
		out = append(out, window(ids[start:end], train[start:end], T, pad))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("data: fewer than two tokens to pack: %w", ErrData)
	}
	return out, nil
}

// Pad makes one window per example, truncated to T inputs (T+1 tokens)
// and padded with pad; examples of fewer than two tokens are skipped.
func Pad(examples []Example, T int, pad int32) ([]Window, error) {
	if T < 1 {
		return nil, fmt.Errorf("data: window length %d < 1: %w", T, ErrData)
	}
	var out []Window
	for _, e := range examples {
		if len(e.IDs) < 2 {
			continue
		}
		n := min(len(e.IDs), T+1)
		w := window(e.IDs[:n], e.Train[:n], T, pad)
		if w.Trained() > 0 {
			out = append(out, w)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("data: no example has a trained token within %d positions: %w", T, ErrData)
	}
	return out, nil
}

// window builds a row from up to T+1 tokens.
func window(ids []int32, train []bool, T int, pad int32) Window {
	w := Window{Inputs: make([]int32, T), Targets: make([]int32, T), Len: len(ids) - 1}
	for i := range T {
		w.Inputs[i], w.Targets[i] = pad, IgnoreIndex
		if i < w.Len {
			w.Inputs[i] = ids[i]
			if train[i+1] {
				w.Targets[i] = ids[i+1]
			}
		}
	}
	return w
}

// Split divides windows into training and validation sets: the validation
// set is round(fraction·n) windows (at least one when fraction > 0)
// chosen by seed, and both keep their original order. The same arguments
// always give the same split.
func Split(ws []Window, fraction float64, seed uint64) (train, val []Window, err error) {
	if fraction < 0 || fraction >= 1 {
		return nil, nil, fmt.Errorf("data: validation fraction %g outside [0, 1): %w", fraction, ErrData)
	}
	nv := int(fraction*float64(len(ws)) + 0.5)
	if fraction > 0 && nv == 0 {
		nv = 1
	}
	if nv >= len(ws) && fraction > 0 {
		return nil, nil, fmt.Errorf("data: %d windows leave none for training after a %g validation split: %w", len(ws), fraction, ErrData)
	}
	perm := rand.New(rand.NewPCG(seed, 0x76616c)).Perm(len(ws))
	isVal := make([]bool, len(ws))
	for _, i := range perm[:nv] {
		isVal[i] = true
	}
	for i, w := range ws {
		if isVal[i] {
			val = append(val, w)
		} else {
			train = append(train, w)
		}
	}
	return train, val, nil
}

// Loader yields batches of B windows, visiting every window once per epoch
// in an order shuffled by seed and epoch. Its position is two counters, so
// State and SetState resume it exactly.
type Loader struct {
	ws    []Window
	b     int
	seed  uint64
	epoch uint64
	pos   int
	order []int
}

// NewLoader returns a Loader over ws in batches of B.
func NewLoader(ws []Window, B int, seed uint64) (*Loader, error) {
	if B < 1 {
		return nil, fmt.Errorf("data: batch size %d < 1: %w", B, ErrData)
	}
	if len(ws) == 0 {
		return nil, fmt.Errorf("data: no windows: %w", ErrData)
	}
	T := len(ws[0].Inputs)
	for i, w := range ws {
		if len(w.Inputs) != T || len(w.Targets) != T {
			return nil, fmt.Errorf("data: window %d has %d inputs, window 0 has %d: %w", i, len(w.Inputs), T, ErrData)
		}
	}
	l := &Loader{ws: ws, b: B, seed: seed}
	l.shuffle()
	return l, nil
}

func (l *Loader) shuffle() {
	l.order = rand.New(rand.NewPCG(l.seed, l.epoch)).Perm(len(l.ws))
}

// Epoch returns the number of completed passes over the windows.
func (l *Loader) Epoch() int { return int(l.epoch) }

// Next fills inputs and targets (each B·T long, row-major) with the next
// batch and returns how many of its targets carry loss. A batch that
// crosses the end of an epoch continues with the next epoch's order.
func (l *Loader) Next(inputs, targets []int32) (int, error) {
	T := len(l.ws[0].Inputs)
	if len(inputs) != l.b*T || len(targets) != l.b*T {
		return 0, fmt.Errorf("data: batch buffers of %d and %d, want %d·%d: %w", len(inputs), len(targets), l.b, T, ErrData)
	}
	n := 0
	for r := range l.b {
		if l.pos == len(l.order) {
			l.epoch++
			l.pos = 0
			l.shuffle()
		}
		w := l.ws[l.order[l.pos]]
		l.pos++
		copy(inputs[r*T:], w.Inputs)
		copy(targets[r*T:], w.Targets)
		n += w.Trained()
	}
	return n, nil
}

const loaderStateVersion = 1

// State returns the loader's position, to be stored with a checkpoint. It
// records the window count, T and B too, so SetState refuses a state from
// a loader over other data.
func (l *Loader) State() []byte {
	b := []byte{loaderStateVersion}
	for _, v := range []uint64{uint64(len(l.ws)), uint64(len(l.ws[0].Inputs)), uint64(l.b), l.seed, l.epoch, uint64(l.pos)} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// SetState restores a position returned by State of a loader over the
// same windows, batch size and seed; the batches that follow are those
// that followed when the state was taken.
func (l *Loader) SetState(state []byte) error {
	if len(state) != 1+6*8 || state[0] != loaderStateVersion {
		return fmt.Errorf("data: loader state of %d bytes is not a version-%d state: %w", len(state), loaderStateVersion, ErrData)
	}
	var v [6]uint64
	for i := range v {
		v[i] = binary.LittleEndian.Uint64(state[1+8*i:])
	}
	if v[0] != uint64(len(l.ws)) || v[1] != uint64(len(l.ws[0].Inputs)) || v[2] != uint64(l.b) || v[3] != l.seed {
		return fmt.Errorf("data: loader state is for %d windows of %d in batches of %d with seed %d, this loader has %d, %d, %d and %d: %w",
			v[0], v[1], v[2], v[3], len(l.ws), len(l.ws[0].Inputs), l.b, l.seed, ErrData)
	}
	if v[5] > uint64(len(l.ws)) {
		return fmt.Errorf("data: loader state position %d beyond %d windows: %w", v[5], len(l.ws), ErrData)
	}
	l.epoch, l.pos = v[4], int(v[5])
	l.shuffle()
	return nil
}
