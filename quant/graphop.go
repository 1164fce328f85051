package quant

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// An int8 layer in a training graph is one frozen op,
//
//	y = x·deq(W)ᵀ + b        (W [Out, In] int8, one scale per output channel)
//
// whose only gradient is dx = dy·deq(W): the int8 weight and the bias never
// train. Both products cut their reduction (In for y, Out for dx) into
// panels, dequantize W one panel at a time into a pooled buffer and
// accumulate that panel's product with kernels.Sgemm, so the float32 weight
// is never materialized: a graph over int8 layers holds one byte per weight
// plus two panels (the one being multiplied and the next, dequantized
// meanwhile), not the five bytes of int8 + a float32 copy. The forward's
// panel is W[:, i0:i1] (a contiguous run of each output channel), the
// gradient's W[o0:o1, :] (contiguous rows).

// Panel sizes. A panel covers maxPanelDepth steps of the reduction (Sgemm's
// own depth blocking, so cutting k there adds no pass over the output) for
// all output columns, within panelFloats (2 MiB; at the medium preset's
// widths every panel is 256 deep). Cutting k rather than the output columns
// packs the other operand (x or dy) once in all instead of once per panel.
// Forward + input gradient, against the float32 linear on a cached weight
// (2 cores, best of 7, panels dequantized between products, scalar
// dequantization): 1.33–1.39× at 128 rows × 512→1536/2048 and 2048→512,
// 1.04× at 1024 rows; with kernels.DequantI8 (AVX2) and the overlap of
// panelLoop, 1.1–1.3× at 128 rows and 1.0× at 1024 (BenchmarkW8Train); depths 64 and
// 128 were 1.4–1.6× at 128 rows, 512 no better than 256, and with the
// overlap of panelLoop depth 128 was again slower in a whole LoRA step. A
// first panel of at least parallelDequant floats is dequantized by several
// goroutines.
const (
	panelFloats     = 1 << 19
	maxPanelDepth   = 256
	parallelDequant = 1 << 15
)

// getPanel returns a buffer of n floats from the kernels' buffer pool (a
// training graph runs one op at a time, so it holds one panel, whatever the
// number of int8 layers); putPanel gives it back.
func getPanel(n int) (*[]float32, []float32) {
	sp := kernels.GetFloats(n)
	return sp, *sp
}

func putPanel(sp *[]float32) { kernels.PutFloats(sp) }

// panelDepth returns how many steps of the reduction (k) one panel of a
// product with n output columns covers: at most maxPanelDepth, within
// panelFloats, a multiple of 16, at least 16, at most k.
func panelDepth(k, n int) int {
	d := min(maxPanelDepth, max(16, panelFloats/n/16*16))
	return min(d, k)
}

// dequantRows dequantizes rows [r0, r1) of the panel through f, on several
// goroutines when the panel is large.
func dequantRows(rows, size int, f func(r0, r1 int)) {
	workers := 1
	if size >= parallelDequant {
		workers = min(rows, kernels.Threads())
	}
	if workers <= 1 {
		f(0, rows)
		return
	}
	step := (rows + workers - 1) / workers
	kernels.For(workers, (rows+step-1)/step, kernels.ItemFunc(func(_, i int) {
		f(i*step, min((i+1)*step, rows))
	}))
}

// panelLoop runs a product whose reduction of length k is cut into panels
// of depth steps, each held in panelLen floats. fill dequantizes rows
// [r0, r1) of panel [k0, k1) into p (rowsOf(k1−k0) rows in all), and gemm
// accumulates the panel's product (first says it is the first panel). The
// next panel is dequantized while the current one is multiplied, into a
// second buffer: the two are the items of one loop of the kernels'
// scheduler, so a helper takes the dequantization while the caller starts
// the product (whose own loop the helper joins when done), and the caller
// does both in turn when no helper is free. The first panel is split
// between goroutines. (Overlapping measured 1.08–1.15× the float LoRA step
// against 1.15–1.20× for dequantizing each panel on two goroutines between
// the products.)
func panelLoop(k, depth, panelLen int, rowsOf func(kb int) int, fill func(p []float32, k0, k1, r0, r1 int), gemm func(p []float32, k0, k1 int, first bool)) {
	spa, cur := getPanel(panelLen)
	defer putPanel(spa)
	k1 := min(depth, k)
	dequantRows(rowsOf(k1), panelLen, func(r0, r1 int) { fill(cur, 0, k1, r0, r1) })
	if k1 == k {
		gemm(cur, 0, k, true)
		return
	}
	spb, next := getPanel(panelLen)
	defer putPanel(spb)
	for k0 := 0; k0 < k; k0 += depth {
		k1 := min(k0+depth, k)
		if k1 == k {
			gemm(cur, k0, k1, k0 == 0)
			break
		}
		n0, n1 := k1, min(k1+depth, k)
		kernels.For(min(2, kernels.Threads()), 2, kernels.ItemFunc(func(_, i int) {
			if i == 0 {
				gemm(cur, k0, k1, k0 == 0)
				return
			}
			fill(next, n0, n1, 0, rowsOf(n1-n0))
		}))
		cur, next = next, cur
	}
}

// forwardFloat computes y = x·deq(W)ᵀ + b for rows rows (x rows·In, y
// rows·Out) without materializing deq(W): the reduction over In is cut into
// panels of input columns, each dequantized (W[:, i0:i1], one contiguous run
// per output channel) and multiplied into y. The arguments are not checked.
func (l *Linear) forwardFloat(y, x []float32, rows int) {
	in, out := l.In, l.Out
	if rows == 0 {
		return
	}
	w, sc, bias := l.Weight.Data, l.Weight.Scale, l.Bias
	if rows <= gemvRows {
		l.forwardGEMV(y, x, rows)
		return
	}
	depth := panelDepth(in, out)
	if bias != nil {
		for r := 0; r < rows; r++ {
			copy(y[r*out:(r+1)*out], bias)
		}
	}
	panelLoop(in, depth, depth*out, func(int) int { return out }, func(p []float32, i0, i1, o0, o1 int) {
		kb := i1 - i0
		for o := o0; o < o1; o++ {
			kernels.DequantI8(p[o*kb:(o+1)*kb], w[o*in+i0:o*in+i1], sc[o])
		}
	}, func(p []float32, i0, i1 int, first bool) {
		kb := i1 - i0
		beta := float32(1)
		if first && bias == nil {
			beta = 0
		}
		kernels.Sgemm(false, true, rows, out, kb, 1, x[i0:], in, p[:out*kb], kb, beta, y, out)
	})
}

// gemvRows is the most rows forwardFloat multiplies straight from the int8
// weight (kernels.DotI8, the scale applied to each sum) rather than through
// dequantized panels: a decoding step's one row per sequence. The int8
// weight is a quarter of the float32 one's memory traffic, so at one row
// this beats even the float32 linear on a cached weight, 1.2–1.8× at the
// medium preset's shapes (BenchmarkW8Forward); at 8 rows it matches the
// panels. It runs on the caller's goroutine: split over output channels on
// two, it measured no faster (waking a parked thread costs about as much as
// the product).
const gemvRows = 8

// forwardGEMV is forwardFloat for a few rows: each output channel's weight
// row is read once for all the rows.
func (l *Linear) forwardGEMV(y, x []float32, rows int) {
	in, out := l.In, l.Out
	w, sc, bias := l.Weight.Data, l.Weight.Scale, l.Bias
	for o := 0; o < out; o++ {
		wo := w[o*in : (o+1)*in]
		var b float32
		if bias != nil {
			b = bias[o]
		}
		for r := 0; r < rows; r++ {
			y[r*out+o] = sc[o]*kernels.DotI8(x[r*in:(r+1)*in], wo) + b
		}
	}
}

// backwardInput computes dx = dy·deq(W) (dy rows·Out, dx rows·In) without
// materializing deq(W): the reduction over Out is cut into panels of output
// channels (contiguous rows of W). The arguments are not checked.
func (l *Linear) backwardInput(dx, dy []float32, rows int) {
	in, out := l.In, l.Out
	if rows == 0 {
		return
	}
	w, sc := l.Weight.Data, l.Weight.Scale
	depth := panelDepth(out, in)
	panelLoop(out, depth, depth*in, func(kb int) int { return kb }, func(p []float32, o0, o1, r0, r1 int) {
		for o := o0 + r0; o < o0+r1; o++ {
			kernels.DequantI8(p[(o-o0)*in:(o-o0+1)*in], w[o*in:(o+1)*in], sc[o])
		}
	}, func(p []float32, o0, o1 int, first bool) {
		kb := o1 - o0
		beta := float32(1)
		if first {
			beta = 0
		}
		kernels.Sgemm(false, false, rows, in, kb, 1, dy[o0:], out, p[:kb*in], in, beta, dx, in)
	})
}

// ---------------------------------------------------------------------------
// gorgonia ops

var i8Matrix = nn.MatrixType()

// int8LinearOp is y = x·deq(W)ᵀ + b for a frozen int8 layer: its one input is
// x [rows, In]; the weight and bias are read from the layer.
type int8LinearOp struct {
	nn.OpBase
	l    *Linear
	rows int
	out  nn.OutBuf
}

// Int8Linear adds y = x·deq(W)ᵀ + b for the int8 layer l to x's graph (x
// [rows, In], y [rows, Out]). The weight and bias are frozen: the op's only
// gradient is the input's, dx = dy·deq(W). Neither direction materializes
// the float32 weight; each dequantizes it a panel at a time. l must not be
// changed while graphs use it.
func Int8Linear(x *G.Node, l *Linear) (*G.Node, error) {
	if l == nil {
		return nil, fmt.Errorf("quant: Int8Linear: nil layer: %w", ErrInput)
	}
	if err := l.check(); err != nil {
		return nil, err
	}
	if x == nil || x.Dtype() != tensor.Float32 || len(x.Shape()) != 2 || x.Shape()[1] != l.In {
		var s tensor.Shape
		if x != nil {
			s = x.Shape()
		}
		return nil, fmt.Errorf("quant: Int8Linear: x must be a float32 [rows, %d] node, got %v: %w", l.In, s, ErrInput)
	}
	op := &int8LinearOp{OpBase: nn.NewOpBase(), l: l, rows: x.Shape()[0]}
	n, err := G.ApplyOp(op, x)
	if err != nil {
		return nil, fmt.Errorf("quant: Int8Linear: %w", err)
	}
	return n, nil
}

func (op *int8LinearOp) Arity() int    { return 1 }
func (op *int8LinearOp) Type() hm.Type { return hm.NewFnType(i8Matrix, i8Matrix) }
func (op *int8LinearOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.l.Out}, nil
}
func (op *int8LinearOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "quant.Int8Linear#%d(layer=%d, rows=%d, in=%d, out=%d, bias=%t)", op.Serial(), op.l.id, op.rows, op.l.In, op.l.Out, op.l.Bias != nil)
}
func (op *int8LinearOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *int8LinearOp) String() string {
	return fmt.Sprintf("quant.Int8Linear(%d→%d, bias=%t)", op.l.In, op.l.Out, op.l.Bias != nil)
}

func (op *int8LinearOp) compute(dst []float32, in []G.Value) error {
	if len(in) != 1 {
		return fmt.Errorf("quant: Int8Linear: %d inputs, want 1: %w", len(in), ErrInput)
	}
	x, err := nn.Float32s("quant", "Int8Linear", "x", in[0], op.rows*op.l.In, ErrInput)
	if err != nil {
		return err
	}
	op.l.forwardFloat(dst, x, op.rows)
	return nil
}

// Do computes y into the op's own buffer.
func (op *int8LinearOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.l.Out, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo computes y into prealloc.
func (op *int8LinearOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return nn.PreallocDo("quant", "Int8Linear", prealloc, op.rows*op.l.Out, ErrInput, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *int8LinearOp) DiffWRT(int) []bool { return []bool{true} }

// SymDiff returns dx = dy·deq(W), computed by an op that reads only dy (no
// forward state, so it need not wait on the forward node).
func (op *int8LinearOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, fmt.Errorf("quant: Int8Linear.SymDiff: %d inputs, want 1: %w", len(inputs), ErrInput)
	}
	g := &int8LinearGradOp{OpBase: nn.NewOpBase(), l: op.l, rows: op.rows, target: inputs[0]}
	dx, err := G.ApplyOp(g, grad)
	if err != nil {
		return nil, fmt.Errorf("quant: Int8Linear gradient: %w", err)
	}
	return G.Nodes{dx}, nil
}

// int8LinearGradOp computes dx = dy·deq(W). It returns a 1×1 placeholder
// without any work when x has no derivative node (nothing trainable lies
// before the layer), as the backward ops of internal/nn and lora do.
type int8LinearGradOp struct {
	nn.OpBase
	l       *Linear
	rows    int
	target  *G.Node
	out, ph nn.OutBuf
}

func (op *int8LinearGradOp) Arity() int    { return 1 }
func (op *int8LinearGradOp) Type() hm.Type { return hm.NewFnType(i8Matrix, i8Matrix) }
func (op *int8LinearGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.l.In}, nil
}
func (op *int8LinearGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "quant.Int8LinearGradX#%d(layer=%d, rows=%d, in=%d, out=%d)", op.Serial(), op.l.id, op.rows, op.l.In, op.l.Out)
}
func (op *int8LinearGradOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *int8LinearGradOp) String() string {
	return fmt.Sprintf("quant.Int8LinearGradX(%d→%d)", op.l.In, op.l.Out)
}

func (op *int8LinearGradOp) Do(in ...G.Value) (G.Value, error) {
	if len(in) != 1 {
		return nil, fmt.Errorf("quant: Int8LinearGradX: %d inputs, want 1: %w", len(in), ErrInput)
	}
	if op.target.Deriv() == nil {
		return op.ph.Get(1, 1), nil
	}
	dy, err := nn.Float32s("quant", "Int8LinearGradX", "dy", in[0], op.rows*op.l.Out, ErrInput)
	if err != nil {
		return nil, err
	}
	t := op.out.Get(op.rows, op.l.In)
	op.l.backwardInput(t.Float32s(), dy, op.rows)
	return t, nil
}
