package nn

import (
	"errors"
	"fmt"
)

// ErrShape is wrapped by every error about sizes that do not fit together:
// slice lengths, node shapes, IDs lengths.
var ErrShape = errors.New("shape mismatch")

// ErrRange is wrapped by errors about token ids or targets outside [0, V)
// (targets may also be IgnoreIndex).
var ErrRange = errors.New("id out of range")

// IgnoreIndex marks a target row that cross-entropy leaves out of the loss
// and its mean (padding), as PyTorch's ignore_index=-1.
const IgnoreIndex = -1

func shapeErr(fn, format string, args ...any) error {
	return fmt.Errorf("nn: %s: %s: %w", fn, fmt.Sprintf(format, args...), ErrShape)
}

// rowsOf returns n/c, or an error when c is not positive or does not divide n.
func rowsOf(fn, what string, n, c int) (int, error) {
	if c <= 0 {
		return 0, shapeErr(fn, "feature size %d must be positive", c)
	}
	if n%c != 0 {
		return 0, shapeErr(fn, "len(%s)=%d is not a multiple of %d", what, n, c)
	}
	return n / c, nil
}

// checkLen checks len(s) == want.
func checkLen(fn, what string, got, want int) error {
	if got != want {
		return shapeErr(fn, "len(%s)=%d, want %d", what, got, want)
	}
	return nil
}

// UnwrapVMError returns the error that a gorgonia VM wrapped while running an
// op, so that errors.Is(nn.UnwrapVMError(err), nn.ErrRange) works on the
// error of RunAll: gorgonia's wrapper has an Err method but no Unwrap. Other
// errors come back unchanged.
func UnwrapVMError(err error) error {
	if e, ok := err.(interface{ Err() error }); ok && e.Err() != nil {
		return e.Err()
	}
	return err
}
