package nn

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

type layerNormOp struct {
	OpBase
	rows, C    int
	eps        float32
	out        OutBuf
	mean, rstd []float32 // saved by Do for the backward ops of the same run
}

// LayerNorm adds y = (x − μ)/√(σ² + eps)·g + b over the last dimension of x
// [N, C] to the graph; g and b are [C]. The forward op saves μ and 1/σ per
// row for its backward ops.
func LayerNorm(x, g, b *G.Node, eps float32) (*G.Node, error) {
	const fn = "LayerNorm"
	xs, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	gs, err := nodeShape(fn, "gamma", g, 1)
	if err != nil {
		return nil, err
	}
	bs, err := nodeShape(fn, "beta", b, 1)
	if err != nil {
		return nil, err
	}
	if gs[0] != xs[1] || bs[0] != xs[1] {
		return nil, shapeErr(fn, "x %v with gamma %v and beta %v", xs, gs, bs)
	}
	if !(eps >= 0) || math.IsInf(float64(eps), 0) {
		return nil, shapeErr(fn, "eps=%g must be finite and non-negative", eps)
	}
	op := &layerNormOp{OpBase: NewOpBase(), rows: xs[0], C: xs[1], eps: eps}
	return apply(fn, op, x, g, b)
}

func (op *layerNormOp) Arity() int { return 3 }

func (op *layerNormOp) Type() hm.Type {
	return hm.NewFnType(matrixType, vectorType, vectorType, matrixType)
}

func (op *layerNormOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.C}, nil
}

func (op *layerNormOp) compute(dst []float32, in []G.Value) error {
	const fn = "LayerNorm"
	if err := checkArity(fn, len(in), 3); err != nil {
		return err
	}
	x, err := Float32s("nn", fn, "x", in[0], op.rows*op.C, ErrShape)
	if err != nil {
		return err
	}
	g, err := Float32s("nn", fn, "gamma", in[1], op.C, ErrShape)
	if err != nil {
		return err
	}
	b, err := Float32s("nn", fn, "beta", in[2], op.C, ErrShape)
	if err != nil {
		return err
	}
	if op.mean == nil {
		op.mean = make([]float32, op.rows)
		op.rstd = make([]float32, op.rows)
	}
	layerNormForward(dst, op.mean, op.rstd, x, g, b, op.C, op.eps)
	return nil
}

// Do normalizes into the op's own buffer.
func (op *layerNormOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.C, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo normalizes into prealloc.
func (op *layerNormOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "LayerNorm", prealloc, op.rows*op.C, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *layerNormOp) DiffWRT(n int) []bool { return []bool{true, true, true} }

// SymDiff builds three backward ops (dx, dgamma, dbeta) so that each runs only
// if its input needs a gradient; dx and dgamma read the saved μ and 1/σ and
// take the forward node as an input to run after it.
func (op *layerNormOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 3 {
		return nil, checkArity("LayerNorm.SymDiff", len(inputs), 3)
	}
	x, g, b := inputs[0], inputs[1], inputs[2]
	rows, C := op.rows, op.C
	dx, err := newGrad("LayerNormGradX", op.serial, x, rows, C, func(dst []float32, in []G.Value) error {
		const fn = "LayerNormGradX"
		xv, err := Float32s("nn", fn, "x", in[0], rows*C, ErrShape)
		if err != nil {
			return err
		}
		gv, err := Float32s("nn", fn, "gamma", in[1], C, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", fn, "dy", in[3], rows*C, ErrShape)
		if err != nil {
			return err
		}
		layerNormBackwardX(dst, dy, xv, gv, op.mean, op.rstd, C, false)
		return nil
	}, x, g, output, grad)
	if err != nil {
		return nil, err
	}
	dg, err := newGrad("LayerNormGradGamma", op.serial, g, C, -1, func(dst []float32, in []G.Value) error {
		const fn = "LayerNormGradGamma"
		xv, err := Float32s("nn", fn, "x", in[0], rows*C, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", fn, "dy", in[2], rows*C, ErrShape)
		if err != nil {
			return err
		}
		clear(dst)
		layerNormBackwardGamma(dst, dy, xv, op.mean, op.rstd, C)
		return nil
	}, x, output, grad)
	if err != nil {
		return nil, err
	}
	db, err := newRowSumGrad("LayerNormGradBeta", op.serial, b, grad, rows, C)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dg, db}, nil
}

func (op *layerNormOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.LayerNorm#%d(rows=%d, C=%d, eps=%x)", op.serial, op.rows, op.C, math.Float32bits(op.eps))
}

func (op *layerNormOp) Hashcode() uint32 { return OpHash(op) }

func (op *layerNormOp) String() string { return fmt.Sprintf("nn.LayerNorm(eps=%g)", op.eps) }
