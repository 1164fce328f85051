package model

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Rotary positions as a gorgonia op over the rotation of rope.go; its
// gradient is the inverse rotation.

// llamaOp is the common part of the ops below.
type llamaOp struct {
	nn.OpDefaults
	name  string // for errors, hashes and String
	arity int
	shape tensor.Shape
	types []hm.Type // inputs then output
	hash  string    // everything the op computes with, for WriteHash
	// compute fills dst from the inputs.
	compute func(dst []float32, in []G.Value) error
	// diff builds the gradient nodes (nil: not differentiable).
	diff func(inputs G.Nodes, grad *G.Node) (G.Nodes, error)
	out  nn.OutBuf
}

func (op *llamaOp) Arity() int                                     { return op.arity }
func (op *llamaOp) Type() hm.Type                                  { return hm.NewFnType(op.types...) }
func (op *llamaOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape.Clone(), nil }
func (op *llamaOp) size() int                                      { return op.shape.TotalSize() }

func (op *llamaOp) Do(in ...G.Value) (G.Value, error) {
	if len(op.shape) == 1 {
		return op.out.Do(op.shape[0], -1, func(dst []float32) error { return op.run(dst, in) })
	}
	return op.out.Do(op.shape[0], op.shape[1], func(dst []float32) error { return op.run(dst, in) })
}

func (op *llamaOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return nn.PreallocDo("model", op.name, prealloc, op.size(), nil, func(dst []float32) error { return op.run(dst, in) })
}

func (op *llamaOp) run(dst []float32, in []G.Value) error {
	if len(in) != op.arity {
		return fmt.Errorf("model: %s: %d inputs, want %d", op.name, len(in), op.arity)
	}
	return op.compute(dst, in)
}

func (op *llamaOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "model.%s(%s)", op.name, op.hash) }
func (op *llamaOp) Hashcode() uint32      { return nn.OpHash(op) }
func (op *llamaOp) String() string        { return op.name }

func (op *llamaOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = op.diff != nil
	}
	return d
}

func (op *llamaOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if op.diff == nil {
		return nil, fmt.Errorf("model: %s is not differentiable", op.name)
	}
	return op.diff(inputs, grad)
}

// floats reads input i of n elements.
func floats(op string, in []G.Value, i, n int) ([]float32, error) {
	return nn.Float32s("model", op, fmt.Sprintf("input %d", i), in[i], n, nil)
}

// ropeGraph adds the rotary positions of t to the first heads heads of x's
// rows ([B·T, width]; sequences of T rows from position 0). Its gradient is
// the inverse rotation of the incoming gradient.
func ropeGraph(x *G.Node, t *ropeTable, heads, T int, inverse bool) (*G.Node, error) {
	s := x.Shape()
	if len(s) != 2 || s[0]%T != 0 || heads*2*t.half > s[1] || T*t.half > len(t.cos) {
		return nil, fmt.Errorf("model: RoPE: x %v for %d heads of %d, T=%d", s, heads, 2*t.half, T)
	}
	n := s.TotalSize()
	op := &llamaOp{name: "RoPE", arity: 1, shape: s.Clone(), types: []hm.Type{matrixType, matrixType},
		hash: fmt.Sprintf("%v heads=%d half=%d T=%d inverse=%t table=%p", s, heads, t.half, T, inverse, t)}
	op.compute = func(dst []float32, in []G.Value) error {
		xv, err := floats("RoPE", in, 0, n)
		if err != nil {
			return err
		}
		copy(dst, xv)
		t.rotate(dst, s[1], heads, T, 0, inverse)
		return nil
	}
	op.diff = func(_ G.Nodes, grad *G.Node) (G.Nodes, error) {
		g, err := ropeGraph(grad, t, heads, T, !inverse)
		return G.Nodes{g}, err
	}
	return G.ApplyOp(op, x)
}
