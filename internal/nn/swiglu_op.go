package nn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

type swigluOp struct {
	OpBase
	rows, cols int
	out        OutBuf
	sig        []float32 // σ(gate) saved by Do for the backward ops of the same run
}

// SwiGLU adds y = silu(gate)·up (see SwiGLUForward) of two 2-D nodes of the
// same shape [rows, I] to the graph. The forward op saves σ(gate), so the
// backward ops evaluate no exponential.
func SwiGLU(gate, up *G.Node) (*G.Node, error) {
	const fn = "SwiGLU"
	gs, err := nodeShape(fn, "gate", gate, 2)
	if err != nil {
		return nil, err
	}
	us, err := nodeShape(fn, "up", up, 2)
	if err != nil {
		return nil, err
	}
	if !gs.Eq(us) {
		return nil, shapeErr(fn, "gate %v and up %v differ", gs, us)
	}
	op := &swigluOp{OpBase: NewOpBase(), rows: gs[0], cols: gs[1]}
	return apply(fn, op, gate, up)
}

func (op *swigluOp) Arity() int { return 2 }

func (op *swigluOp) Type() hm.Type { return hm.NewFnType(matrixType, matrixType, matrixType) }

func (op *swigluOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.cols}, nil
}

func (op *swigluOp) compute(dst []float32, in []G.Value) error {
	const fn = "SwiGLU"
	if err := checkArity(fn, len(in), 2); err != nil {
		return err
	}
	n := op.rows * op.cols
	gate, err := Float32s("nn", fn, "gate", in[0], n, ErrShape)
	if err != nil {
		return err
	}
	up, err := Float32s("nn", fn, "up", in[1], n, ErrShape)
	if err != nil {
		return err
	}
	if op.sig == nil {
		op.sig = make([]float32, n)
	}
	swigluForward(dst, op.sig, gate, up)
	return nil
}

// Do applies SwiGLU into the op's own buffer.
func (op *swigluOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.cols, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo applies SwiGLU into prealloc.
func (op *swigluOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "SwiGLU", prealloc, op.rows*op.cols, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *swigluOp) DiffWRT(n int) []bool { return []bool{true, true} }

// SymDiff builds dgate and dup from the saved sigmoid; each takes the
// forward node as an input to run after it.
func (op *swigluOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, checkArity("SwiGLU.SymDiff", len(inputs), 2)
	}
	gate, up := inputs[0], inputs[1]
	n := op.rows * op.cols
	dg, err := newGrad("SwiGLUGradGate", op.serial, gate, op.rows, op.cols, func(dst []float32, in []G.Value) error {
		const fn = "SwiGLUGradGate"
		gv, err := Float32s("nn", fn, "gate", in[0], n, ErrShape)
		if err != nil {
			return err
		}
		uv, err := Float32s("nn", fn, "up", in[1], n, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", fn, "dy", in[3], n, ErrShape)
		if err != nil {
			return err
		}
		swigluBackward(dst, nil, dy, gv, uv, op.sig, false)
		return nil
	}, gate, up, output, grad)
	if err != nil {
		return nil, err
	}
	du, err := newGrad("SwiGLUGradUp", op.serial, up, op.rows, op.cols, func(dst []float32, in []G.Value) error {
		const fn = "SwiGLUGradUp"
		gv, err := Float32s("nn", fn, "gate", in[0], n, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", fn, "dy", in[2], n, ErrShape)
		if err != nil {
			return err
		}
		swigluBackward(nil, dst, dy, gv, nil, op.sig, false)
		return nil
	}, gate, output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dg, du}, nil
}

func (op *swigluOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.SwiGLU#%d(%d×%d)", op.serial, op.rows, op.cols)
}

func (op *swigluOp) Hashcode() uint32 { return OpHash(op) }

func (op *swigluOp) String() string { return "nn.SwiGLU" }

// swigluPackedOp is SwiGLUPacked.
type swigluPackedOp struct {
	OpBase
	rows, cols int // of the output; the input has 2·cols columns
	out        OutBuf
	sig        []float32 // σ(gate) saved by Do for the gradient op of the same run
}

// SwiGLUPacked adds y = silu(gate)·up to the graph for gu [rows, 2I] whose
// rows hold gate then up ([gate | up], as LinearCat of gate_proj and up_proj
// gives them); y is [rows, I]. It computes what SwiGLU of the two halves
// does, and its gradient is one op that writes both halves of dgu.
func SwiGLUPacked(gu *G.Node) (*G.Node, error) {
	const fn = "SwiGLUPacked"
	s, err := nodeShape(fn, "gu", gu, 2)
	if err != nil {
		return nil, err
	}
	if s[1]%2 != 0 {
		return nil, shapeErr(fn, "gu %v: the width must be even (gate and up halves)", s)
	}
	return apply(fn, &swigluPackedOp{OpBase: NewOpBase(), rows: s[0], cols: s[1] / 2}, gu)
}

func (op *swigluPackedOp) Arity() int { return 1 }

func (op *swigluPackedOp) Type() hm.Type { return hm.NewFnType(matrixType, matrixType) }

func (op *swigluPackedOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.cols}, nil
}

func (op *swigluPackedOp) compute(dst []float32, in []G.Value) error {
	const fn = "SwiGLUPacked"
	if err := checkArity(fn, len(in), 1); err != nil {
		return err
	}
	n := op.rows * op.cols
	gu, err := Float32s("nn", fn, "gu", in[0], 2*n, ErrShape)
	if err != nil {
		return err
	}
	if op.sig == nil {
		op.sig = make([]float32, n)
	}
	swigluPacked(dst, op.sig, gu, nil, nil, op.cols)
	return nil
}

// Do applies SwiGLU into the op's own buffer.
func (op *swigluPackedOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.cols, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo applies SwiGLU into prealloc.
func (op *swigluPackedOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "SwiGLUPacked", prealloc, op.rows*op.cols, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *swigluPackedOp) DiffWRT(n int) []bool { return []bool{true} }

// SymDiff builds dgu from the saved sigmoid; it takes the forward node as
// an input to run after it.
func (op *swigluPackedOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, checkArity("SwiGLUPacked.SymDiff", len(inputs), 1)
	}
	n := op.rows * op.cols
	dgu, err := newGrad("SwiGLUPackedGrad", op.serial, inputs[0], op.rows, 2*op.cols, func(dst []float32, in []G.Value) error {
		const fn = "SwiGLUPackedGrad"
		gu, err := Float32s("nn", fn, "gu", in[0], 2*n, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", fn, "dy", in[2], n, ErrShape)
		if err != nil {
			return err
		}
		if len(op.sig) != n {
			return fmt.Errorf("nn: %s ran before its forward op: %w", fn, ErrShape)
		}
		swigluPacked(nil, op.sig, gu, dst, dy, op.cols)
		return nil
	}, inputs[0], output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dgu}, nil
}

func (op *swigluPackedOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.SwiGLUPacked#%d(%d×%d)", op.serial, op.rows, op.cols)
}

func (op *swigluPackedOp) Hashcode() uint32 { return OpHash(op) }

func (op *swigluPackedOp) String() string { return "nn.SwiGLUPacked" }
