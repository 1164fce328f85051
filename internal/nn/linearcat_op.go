package nn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// linearCatOp is LinearCat: several bias-free linears of one input, their
// outputs side by side in one matrix.
type linearCatOp struct {
	OpBase
	rows, in int
	outs     []int // each weight's output width
	total    int   // Σ outs, the row length of y
	buf      OutBuf
}

// LinearCat adds y = [x·W₁ | x·W₂ | …] to the graph: x is [N, in], each Wᵢ
// [in, outᵢ] (Hugging Face GPT-2's Conv1D layout, as Linear), y is
// [N, Σ outᵢ] with each product in its own block of columns. It computes
// what Linear of each weight followed by concatenating the columns does,
// without the copy: the Llama family's q, k and v projections of one
// normalized input give the packed [q | k | v] rows that attention takes,
// and gate and up the [gate | up] rows of SwiGLUPacked. Its gradient needs
// no sum of the input's gradients either: dx = Σ dyᵢ·Wᵢᵀ accumulates in the
// products. Each dWᵢ is an op of its own, skipped for a frozen weight.
func LinearCat(x *G.Node, ws ...*G.Node) (*G.Node, error) {
	const fn = "LinearCat"
	if len(ws) == 0 {
		return nil, shapeErr(fn, "no weights")
	}
	xs, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	op := &linearCatOp{OpBase: NewOpBase(), rows: xs[0], in: xs[1]}
	for i, w := range ws {
		s, err := nodeShape(fn, fmt.Sprintf("w[%d]", i), w, 2)
		if err != nil {
			return nil, err
		}
		if s[0] != op.in {
			return nil, shapeErr(fn, "x %v does not fit weight %d %v", xs, i, s)
		}
		op.outs = append(op.outs, s[1])
		op.total += s[1]
	}
	return apply(fn, op, append([]*G.Node{x}, ws...)...)
}

func (op *linearCatOp) Arity() int { return 1 + len(op.outs) }

func (op *linearCatOp) Type() hm.Type {
	ts := make([]hm.Type, op.Arity()+1)
	for i := range ts {
		ts[i] = matrixType
	}
	return hm.NewFnType(ts...)
}

func (op *linearCatOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.total}, nil
}

// weights returns the weights among the inputs vals, in order.
func (op *linearCatOp) weights(fn string, vals []G.Value) ([][]float32, error) {
	ws := make([][]float32, len(op.outs))
	for i, out := range op.outs {
		w, err := Float32s("nn", fn, "w", vals[i], op.in*out, ErrShape)
		if err != nil {
			return nil, err
		}
		ws[i] = w
	}
	return ws, nil
}

func (op *linearCatOp) compute(dst []float32, in []G.Value) error {
	const fn = "LinearCat"
	if err := checkArity(fn, len(in), op.Arity()); err != nil {
		return err
	}
	x, err := Float32s("nn", fn, "x", in[0], op.rows*op.in, ErrShape)
	if err != nil {
		return err
	}
	ws, err := op.weights(fn, in[1:])
	if err != nil {
		return err
	}
	if op.rows == 0 {
		return nil
	}
	off := 0
	for i, out := range op.outs {
		kernels.Sgemm(false, false, op.rows, out, op.in, 1, x, op.in, ws[i], out, 0, dst[off:], op.total)
		off += out
	}
	return nil
}

// Do computes y into the op's own buffer.
func (op *linearCatOp) Do(in ...G.Value) (G.Value, error) {
	return op.buf.Do(op.rows, op.total, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo computes y into prealloc.
func (op *linearCatOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "LinearCat", prealloc, op.rows*op.total, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *linearCatOp) DiffWRT(n int) []bool {
	return AllDiff(n)
}

// SymDiff builds dx = Σ dyᵢ·Wᵢᵀ as one op and each dWᵢ = xᵀ·dyᵢ as an op
// of its own; none reads forward state.
func (op *linearCatOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, checkArity("LinearCat.SymDiff", len(inputs), op.Arity())
	}
	rows, in, total := op.rows, op.in, op.total
	dxIn := append(append(G.Nodes(nil), inputs[1:]...), grad)
	dx, err := newGrad("LinearCatGradX", op.serial, inputs[0], rows, in, func(dst []float32, vals []G.Value) error {
		const fn = "LinearCatGradX"
		ws, err := op.weights(fn, vals)
		if err != nil {
			return err
		}
		dy, err := Float32s("nn", fn, "dy", vals[len(vals)-1], rows*total, ErrShape)
		if err != nil {
			return err
		}
		if rows == 0 {
			return nil
		}
		var beta float32
		off := 0
		for i, out := range op.outs {
			kernels.Sgemm(false, true, rows, in, out, 1, dy[off:], total, ws[i], out, beta, dst, in)
			beta, off = 1, off+out
		}
		return nil
	}, dxIn...)
	if err != nil {
		return nil, err
	}
	grads := G.Nodes{dx}
	off := 0
	for i, out := range op.outs {
		off0 := off
		dw, err := newGrad("LinearCatGradW", op.serial, inputs[1+i], in, out, func(dst []float32, vals []G.Value) error {
			const fn = "LinearCatGradW"
			x, err := Float32s("nn", fn, "x", vals[0], rows*in, ErrShape)
			if err != nil {
				return err
			}
			dy, err := Float32s("nn", fn, "dy", vals[1], rows*total, ErrShape)
			if err != nil {
				return err
			}
			weightGradProducts.Add(1)
			if rows == 0 {
				clear(dst)
				return nil
			}
			kernels.Sgemm(true, false, in, out, rows, 1, x, in, dy[off0:], total, 0, dst, out)
			return nil
		}, inputs[0], grad)
		if err != nil {
			return nil, err
		}
		grads = append(grads, dw)
		off += out
	}
	return grads, nil
}

func (op *linearCatOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.LinearCat#%d(rows=%d, in=%d, outs=%v)", op.serial, op.rows, op.in, op.outs)
}

func (op *linearCatOp) Hashcode() uint32 { return OpHash(op) }

func (op *linearCatOp) String() string {
	return fmt.Sprintf("nn.LinearCat(%d→%v)", op.in, op.outs)
}
