package nn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

type geluOp struct {
	OpBase
	rows, cols int
	out        OutBuf
	sig        []float32 // σ(2u) saved by Do for the backward op of the same run
}

// GELU adds the tanh-form GELU of a 2-D x to the graph. The forward op saves
// the sigmoid it computes, so the backward op evaluates no exponential.
func GELU(x *G.Node) (*G.Node, error) {
	const fn = "GELU"
	s, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	op := &geluOp{OpBase: NewOpBase(), rows: s[0], cols: s[1]}
	return apply(fn, op, x)
}

func (op *geluOp) Arity() int { return 1 }

func (op *geluOp) Type() hm.Type { return hm.NewFnType(matrixType, matrixType) }

func (op *geluOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.cols}, nil
}

func (op *geluOp) compute(dst []float32, in []G.Value) error {
	if err := checkArity("GELU", len(in), 1); err != nil {
		return err
	}
	n := op.rows * op.cols
	x, err := Float32s("nn", "GELU", "x", in[0], n, ErrShape)
	if err != nil {
		return err
	}
	if op.sig == nil {
		op.sig = make([]float32, n)
	}
	geluForward(dst, op.sig, x)
	return nil
}

// Do applies GELU into the op's own buffer.
func (op *geluOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.cols, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo applies GELU into prealloc.
func (op *geluOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "GELU", prealloc, op.rows*op.cols, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *geluOp) DiffWRT(n int) []bool { return []bool{true} }

// SymDiff builds dx = dy·GELU'(x) from the saved sigmoid.
func (op *geluOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, checkArity("GELU.SymDiff", len(inputs), 1)
	}
	n := op.rows * op.cols
	dx, err := newGrad("GELUGrad", op.serial, inputs[0], op.rows, op.cols, func(dst []float32, in []G.Value) error {
		x, err := Float32s("nn", "GELUGrad", "x", in[0], n, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", "GELUGrad", "dy", in[2], n, ErrShape)
		if err != nil {
			return err
		}
		geluBackward(dst, dy, x, op.sig, false)
		return nil
	}, inputs[0], output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

func (op *geluOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.GELU#%d(%d×%d)", op.serial, op.rows, op.cols)
}

func (op *geluOp) Hashcode() uint32 { return OpHash(op) }

func (op *geluOp) String() string { return "nn.GELU" }
