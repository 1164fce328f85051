package nn

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

var (
	matrixType = MatrixType()
	vectorType = VectorType()
)

// scalarF32 reads a scalar value (the upstream gradient of a loss).
func scalarF32(fn string, v G.Value) (float32, error) {
	switch s := v.(type) {
	case *G.F32:
		return float32(*s), nil
	case *G.F64:
		return float32(*s), nil
	case *tensor.Dense:
		if s.Shape().TotalSize() == 1 {
			switch s.Dtype() {
			case tensor.Float32:
				return s.Float32s()[0], nil
			case tensor.Float64:
				return float32(s.Float64s()[0]), nil
			}
		}
	}
	return 0, fmt.Errorf("nn: %s: upstream gradient is a %T, want a float scalar: %w", fn, v, ErrShape)
}

// checkArity reports a wrong number of values given to Do.
func checkArity(fn string, got, want int) error {
	if got != want {
		return fmt.Errorf("nn: %s: %d inputs, want %d: %w", fn, got, want, ErrShape)
	}
	return nil
}

// nodeShape validates that n is a float32 node of the given rank and returns
// its shape.
func nodeShape(fn, what string, n *G.Node, dims int) (tensor.Shape, error) {
	if n == nil {
		return nil, fmt.Errorf("nn: %s: %s is nil: %w", fn, what, ErrShape)
	}
	if n.Dtype() != tensor.Float32 {
		return nil, fmt.Errorf("nn: %s: %s has dtype %v, want float32: %w", fn, what, n.Dtype(), ErrShape)
	}
	s := n.Shape()
	if len(s) != dims {
		return nil, shapeErr(fn, "%s has shape %v, want %d dimensions", what, s, dims)
	}
	for _, d := range s {
		if d <= 0 {
			return nil, shapeErr(fn, "%s has shape %v", what, s)
		}
	}
	return s, nil
}

// apply adds op to the graph of its inputs.
func apply(fn string, op G.Op, inputs ...*G.Node) (*G.Node, error) {
	n, err := G.ApplyOp(op, inputs...)
	if err != nil {
		return nil, fmt.Errorf("nn: %s: %w", fn, err)
	}
	return n, nil
}

// newRowSumGrad adds the gradient of a bias broadcast over rows rows of
// width C: the column sums of grad, rows in order (bias add, linear bias,
// LayerNorm's beta).
func newRowSumGrad(name string, fwd uint64, target, grad *G.Node, rows, C int) (*G.Node, error) {
	return newGrad(name, fwd, target, C, -1, func(dst []float32, in []G.Value) error {
		dy, err := Float32s("nn", name, "dy", in[0], rows*C, ErrShape)
		if err != nil {
			return err
		}
		clear(dst)
		columnSums(dst, dy, C)
		return nil
	}, grad)
}

// newGrad is NewGrad for the ops of this package.
func newGrad(name string, fwd uint64, target *G.Node, r, c int, run func([]float32, []G.Value) error, inputs ...*G.Node) (*G.Node, error) {
	return NewGrad("nn", name, fwd, target, r, c, run, inputs...)
}
