package nn

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

type rmsNormOp struct {
	OpBase
	rows, C int
	eps     float32
	out     OutBuf
	rstd    []float32 // saved by Do for the backward ops of the same run
}

// RMSNorm adds y = x/√(mean(x²) + eps)·w over the last dimension of x
// [N, C] to the graph (the Llama family's norm, see RMSNormForward); w is
// [C]. The forward op saves 1/rms per row for its backward ops.
func RMSNorm(x, w *G.Node, eps float32) (*G.Node, error) {
	const fn = "RMSNorm"
	xs, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	ws, err := nodeShape(fn, "w", w, 1)
	if err != nil {
		return nil, err
	}
	if ws[0] != xs[1] {
		return nil, shapeErr(fn, "x %v with w %v", xs, ws)
	}
	if !(eps >= 0) || math.IsInf(float64(eps), 0) {
		return nil, shapeErr(fn, "eps=%g must be finite and non-negative", eps)
	}
	op := &rmsNormOp{OpBase: NewOpBase(), rows: xs[0], C: xs[1], eps: eps}
	return apply(fn, op, x, w)
}

func (op *rmsNormOp) Arity() int { return 2 }

func (op *rmsNormOp) Type() hm.Type { return hm.NewFnType(matrixType, vectorType, matrixType) }

func (op *rmsNormOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.C}, nil
}

func (op *rmsNormOp) compute(dst []float32, in []G.Value) error {
	const fn = "RMSNorm"
	if err := checkArity(fn, len(in), 2); err != nil {
		return err
	}
	x, err := Float32s("nn", fn, "x", in[0], op.rows*op.C, ErrShape)
	if err != nil {
		return err
	}
	w, err := Float32s("nn", fn, "w", in[1], op.C, ErrShape)
	if err != nil {
		return err
	}
	if op.rstd == nil {
		op.rstd = make([]float32, op.rows)
	}
	rmsNormForward(dst, op.rstd, x, w, op.C, op.eps)
	return nil
}

// Do normalizes into the op's own buffer.
func (op *rmsNormOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.C, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo normalizes into prealloc.
func (op *rmsNormOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "RMSNorm", prealloc, op.rows*op.C, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *rmsNormOp) DiffWRT(n int) []bool { return []bool{true, true} }

// SymDiff builds the dx and dw backward ops; both read the saved 1/rms and
// take the forward node as an input to run after it.
func (op *rmsNormOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, checkArity("RMSNorm.SymDiff", len(inputs), 2)
	}
	x, w := inputs[0], inputs[1]
	rows, C := op.rows, op.C
	dx, err := newGrad("RMSNormGradX", op.serial, x, rows, C, func(dst []float32, in []G.Value) error {
		const fn = "RMSNormGradX"
		xv, err := Float32s("nn", fn, "x", in[0], rows*C, ErrShape)
		if err != nil {
			return err
		}
		wv, err := Float32s("nn", fn, "w", in[1], C, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", fn, "dy", in[3], rows*C, ErrShape)
		if err != nil {
			return err
		}
		rmsNormBackwardX(dst, dy, xv, wv, op.rstd, C, false)
		return nil
	}, x, w, output, grad)
	if err != nil {
		return nil, err
	}
	dw, err := newGrad("RMSNormGradW", op.serial, w, C, -1, func(dst []float32, in []G.Value) error {
		const fn = "RMSNormGradW"
		xv, err := Float32s("nn", fn, "x", in[0], rows*C, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", fn, "dy", in[2], rows*C, ErrShape)
		if err != nil {
			return err
		}
		clear(dst)
		rmsNormBackwardW(dst, dy, xv, op.rstd, C)
		return nil
	}, x, output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dw}, nil
}

func (op *rmsNormOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.RMSNorm#%d(rows=%d, C=%d, eps=%x)", op.serial, op.rows, op.C, math.Float32bits(op.eps))
}

func (op *rmsNormOp) Hashcode() uint32 { return OpHash(op) }

func (op *rmsNormOp) String() string { return fmt.Sprintf("nn.RMSNorm(eps=%g)", op.eps) }
