package nn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// LinearOpts configures Linear.
type LinearOpts struct {
	// TransW says the weight is stored [out, in] and the op computes x·Wᵀ:
	// the tied output head, whose weight is wte [V, C]. The default is
	// Hugging Face GPT-2's Conv1D layout [in, out].
	TransW bool
	// BF16 runs the op's three products on bfloat16 operands with float32
	// accumulation (kernels.GemmBF16, mixed-precision training): the
	// float32 weight, x and dy are rounded to bf16 as the products pack
	// them, so the op keeps no bf16 copy of the weight. y, the gradients
	// and the weight itself stay float32.
	BF16 bool
}

type linearOp struct {
	OpBase
	rows, in, out int
	transW, bias  bool
	bf16          bool
	buf           OutBuf
}

// Linear adds y = x·W + b to the graph (x·Wᵀ + b with opt.TransW): x is
// [N, in], W [in, out] ([out, in] with TransW), b [out] or nil; y is
// [N, out]. Its backward is three ops (dx, dW, db), each skipped when its
// input needs no gradient, so a frozen weight costs no xᵀ·dy product.
func Linear(x, w, b *G.Node, opt LinearOpts) (*G.Node, error) {
	const fn = "Linear"
	xs, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	ws, err := nodeShape(fn, "w", w, 2)
	if err != nil {
		return nil, err
	}
	in, out := ws[0], ws[1]
	if opt.TransW {
		in, out = ws[1], ws[0]
	}
	if xs[1] != in {
		return nil, shapeErr(fn, "x %v does not fit weight %v (TransW=%t)", xs, ws, opt.TransW)
	}
	op := &linearOp{OpBase: NewOpBase(), rows: xs[0], in: in, out: out, transW: opt.TransW, bias: b != nil, bf16: opt.BF16}
	if b == nil {
		return apply(fn, op, x, w)
	}
	bs, err := nodeShape(fn, "b", b, 1)
	if err != nil {
		return nil, err
	}
	if bs[0] != out {
		return nil, shapeErr(fn, "bias %v for %d outputs", bs, out)
	}
	return apply(fn, op, x, w, b)
}

func (op *linearOp) Arity() int {
	if op.bias {
		return 3
	}
	return 2
}

func (op *linearOp) Type() hm.Type {
	if op.bias {
		return hm.NewFnType(matrixType, matrixType, vectorType, matrixType)
	}
	return hm.NewFnType(matrixType, matrixType, matrixType)
}

func (op *linearOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.out}, nil
}

func (op *linearOp) compute(dst []float32, in []G.Value) error {
	const fn = "Linear"
	if err := checkArity(fn, len(in), op.Arity()); err != nil {
		return err
	}
	x, err := Float32s("nn", fn, "x", in[0], op.rows*op.in, ErrShape)
	if err != nil {
		return err
	}
	w, err := Float32s("nn", fn, "w", in[1], op.in*op.out, ErrShape)
	if err != nil {
		return err
	}
	var b []float32
	if op.bias {
		if b, err = Float32s("nn", fn, "b", in[2], op.out, ErrShape); err != nil {
			return err
		}
	}
	if op.bf16 {
		linearForwardBF16(dst, x, kernels.BF16Mat{F32: w}, b, op.rows, op.in, op.out, op.transW)
		return nil
	}
	linearForward(dst, x, w, b, op.rows, op.in, op.out, op.transW)
	return nil
}

// Do computes y into the op's own buffer.
func (op *linearOp) Do(in ...G.Value) (G.Value, error) {
	return op.buf.Do(op.rows, op.out, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo computes y into prealloc.
func (op *linearOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "Linear", prealloc, op.rows*op.out, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *linearOp) DiffWRT(n int) []bool {
	return AllDiff(n)
}

// SymDiff builds dx = dy·Wᵀ, dW = xᵀ·dy and db = Σ_rows dy as separate ops;
// none reads forward state, so none waits on the forward node.
func (op *linearOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, checkArity("Linear.SymDiff", len(inputs), op.Arity())
	}
	x, w := inputs[0], inputs[1]
	rows, in, out, transW := op.rows, op.in, op.out, op.transW
	dx, err := newGrad("LinearGradX", op.serial, x, rows, in, func(dst []float32, vals []G.Value) error {
		wv, err := Float32s("nn", "LinearGradX", "w", vals[0], in*out, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", "LinearGradX", "dy", vals[1], rows*out, ErrShape)
		if err != nil {
			return err
		}
		if op.bf16 {
			linearBackwardXBF16(dst, dy, kernels.BF16Mat{F32: wv}, rows, in, out, transW)
			return nil
		}
		linearBackwardX(dst, dy, wv, rows, in, out, transW, 0)
		return nil
	}, w, grad)
	if err != nil {
		return nil, err
	}
	wr, wc := in, out
	if transW {
		wr, wc = out, in
	}
	dw, err := newGrad("LinearGradW", op.serial, w, wr, wc, func(dst []float32, vals []G.Value) error {
		xv, err := Float32s("nn", "LinearGradW", "x", vals[0], rows*in, ErrShape)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", "LinearGradW", "dy", vals[1], rows*out, ErrShape)
		if err != nil {
			return err
		}
		if op.bf16 {
			linearBackwardWBF16(dst, dy, xv, rows, in, out, transW)
			return nil
		}
		linearBackwardW(dst, dy, xv, rows, in, out, transW, 0)
		return nil
	}, x, grad)
	if err != nil {
		return nil, err
	}
	if !op.bias {
		return G.Nodes{dx, dw}, nil
	}
	db, err := newRowSumGrad("LinearGradB", op.serial, inputs[2], grad, rows, out)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dw, db}, nil
}

func (op *linearOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.Linear#%d(rows=%d, in=%d, out=%d, transW=%t, bias=%t, bf16=%t)", op.serial, op.rows, op.in, op.out, op.transW, op.bias, op.bf16)
}

func (op *linearOp) Hashcode() uint32 { return OpHash(op) }

func (op *linearOp) String() string {
	return fmt.Sprintf("nn.Linear(%d→%d, transW=%t, bias=%t, bf16=%t)", op.in, op.out, op.transW, op.bias, op.bf16)
}

type biasAddOp struct {
	OpBase
	rows, C int
	buf     OutBuf
}

// BiasAdd adds y = x + b to the graph, b [C] added to every row of x [N, C],
// without the copy that gorgonia's broadcasting makes of b. Its gradient for
// x is the upstream gradient itself.
func BiasAdd(x, b *G.Node) (*G.Node, error) {
	const fn = "BiasAdd"
	xs, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	bs, err := nodeShape(fn, "b", b, 1)
	if err != nil {
		return nil, err
	}
	if bs[0] != xs[1] {
		return nil, shapeErr(fn, "bias %v for x %v", bs, xs)
	}
	return apply(fn, &biasAddOp{OpBase: NewOpBase(), rows: xs[0], C: xs[1]}, x, b)
}

func (op *biasAddOp) Arity() int { return 2 }

func (op *biasAddOp) Type() hm.Type { return hm.NewFnType(matrixType, vectorType, matrixType) }

func (op *biasAddOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.C}, nil
}

func (op *biasAddOp) compute(dst []float32, in []G.Value) error {
	if err := checkArity("BiasAdd", len(in), 2); err != nil {
		return err
	}
	x, err := Float32s("nn", "BiasAdd", "x", in[0], op.rows*op.C, ErrShape)
	if err != nil {
		return err
	}
	b, err := Float32s("nn", "BiasAdd", "b", in[1], op.C, ErrShape)
	if err != nil {
		return err
	}
	C := op.C
	for r := 0; r < op.rows; r++ {
		xr, yr := x[r*C:r*C+C], dst[r*C:r*C+C]
		for j, v := range xr {
			yr[j] = v + b[j]
		}
	}
	return nil
}

// Do adds the bias into the op's own buffer.
func (op *biasAddOp) Do(in ...G.Value) (G.Value, error) {
	return op.buf.Do(op.rows, op.C, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo adds the bias into prealloc.
func (op *biasAddOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "BiasAdd", prealloc, op.rows*op.C, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *biasAddOp) DiffWRT(n int) []bool { return []bool{true, true} }

// SymDiff passes dy through to x and sums it over rows for b.
func (op *biasAddOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, checkArity("BiasAdd.SymDiff", len(inputs), 2)
	}
	rows, C := op.rows, op.C
	db, err := newRowSumGrad("BiasAddGradB", op.serial, inputs[1], grad, rows, C)
	if err != nil {
		return nil, err
	}
	return G.Nodes{grad, db}, nil
}

func (op *biasAddOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.BiasAdd#%d(%d×%d)", op.serial, op.rows, op.C)
}

func (op *biasAddOp) Hashcode() uint32 { return OpHash(op) }

func (op *biasAddOp) String() string { return "nn.BiasAdd" }
