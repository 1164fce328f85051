package nn

import (
	"fmt"
	"hash"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// opSerial numbers op instances. Each op writes its number into its hash so
// gorgonia never merges two of them: ops that look alike may read different
// IDs holders or saved state.
var opSerial atomic.Uint64

// opBase carries the parts common to every op of the package.
type opBase struct {
	OpDefaults
	serial uint64
}

func newOpBase() opBase { return opBase{serial: opSerial.Add(1)} }

var (
	matrixType = G.TensorType{Dims: 2, Of: tensor.Float32}
	vectorType = G.TensorType{Dims: 1, Of: tensor.Float32}
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

// gradOp is the backward op for one input (its target) of a forward op. Its
// inputs are whatever values the gradient needs, including the forward node
// when the forward op's saved state is read, so the tape runs it after the
// forward op.
type gradOp struct {
	opBase
	name   string // e.g. "LayerNormGradX"
	fwd    uint64 // serial of the forward op, for the hash and String
	target *G.Node
	arity  int
	typ    hm.Type
	r, c   int // output shape (r, c), or (r) when c < 0
	run    func(dst []float32, in []G.Value) error

	out, placeholder OutBuf
}

// newGrad builds the gradient node of target from inputs.
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

func newGrad(name string, fwd uint64, target *G.Node, r, c int, run func([]float32, []G.Value) error, inputs ...*G.Node) (*G.Node, error) {
	types := make([]hm.Type, 0, len(inputs)+1)
	for _, in := range inputs {
		types = append(types, in.Type())
	}
	if c >= 0 {
		types = append(types, matrixType)
	} else {
		types = append(types, vectorType)
	}
	op := &gradOp{opBase: newOpBase(), name: name, fwd: fwd, target: target, arity: len(inputs), typ: hm.NewFnType(types...), r: r, c: c, run: run}
	return apply(name, op, inputs...)
}

// needed reports whether G.Grad gave the target a derivative: it does for
// the nodes passed to it and every node between them and the cost, and for
// no other. A frozen weight (or the data) has none, and its gradient is then
// never read, so it is not computed.
func (op *gradOp) needed() bool { return op.target.Deriv() != nil }

// Arity is the number of values the gradient reads.
func (op *gradOp) Arity() int { return op.arity }

// Type is the function type from the inputs' types to the gradient's.
func (op *gradOp) Type() hm.Type { return op.typ }

// InferShape returns the target's shape.
func (op *gradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	if op.c >= 0 {
		return tensor.Shape{op.r, op.c}, nil
	}
	return tensor.Shape{op.r}, nil
}

// Do computes the gradient into the op's own buffer, or returns a 1×1
// placeholder without computing when the target needs no gradient.
func (op *gradOp) Do(in ...G.Value) (G.Value, error) {
	if !op.needed() {
		return op.placeholder.Get(1, 1), nil
	}
	return op.out.Do(op.r, op.c, func(dst []float32) error { return op.run(dst, in) })
}

// UsePreallocDo computes the gradient into prealloc.
func (op *gradOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	if !op.needed() {
		return op.placeholder.Get(1, 1), nil
	}
	n := op.r
	if op.c >= 0 {
		n *= op.c
	}
	return PreallocDo("nn", op.name, prealloc, n, ErrShape, func(dst []float32) error { return op.run(dst, in) })
}

// WriteHash identifies the instance.
func (op *gradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.%s#%d(fwd#%d, %d×%d)", op.name, op.serial, op.fwd, op.r, op.c)
}

// Hashcode hashes WriteHash.
func (op *gradOp) Hashcode() uint32 { return OpHash(op) }

// String names the op in graph dumps.
func (op *gradOp) String() string { return fmt.Sprintf("nn.%s(fwd#%d)", op.name, op.fwd) }
