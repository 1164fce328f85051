package lora

import (
	"fmt"
	"hash"
	"sync"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The adapter path of a layer in the training graph is two nodes (unless
// Layer fuses it with a frozen bf16 or float32 base into one fusedOp,
// fused.go):
//
//	hᵀ = A·dropout(x)ᵀ         downOp (A is [r, in])
//	y = base + scale·h·Bᵀ      upAddOp (B is [out, r])
//
// The activation between them is stored transposed, [r, rows]: every
// product of the pair then has the rank r as its row count (M) or inner
// dimension (K), never as its column count, which the SGEMM kernels tile 16
// or 32 wide and would pad 2–4×. With the dropout mask kept as bits this
// took the adapter path of a 1,024×576 rank-8 layer from about 6.0 to 4.4
// ms of CPU time with dropout and from 2.7 to 2.1 without
// (BenchmarkAdapterProducts); at rank ≤ 8 the kernels' low-rank products
// (lowRank) take it on to about 1.6 and 1.0 ms.
//
// Both ops of this file are fused custom ops in the style of internal/nn:
// they own their output buffers, write a per-instance serial number into
// their hash so gorgonia never merges two of them, and their backward ops
// skip all work when the input they differentiate has no derivative node
// (G.Grad gives one only to nodes between the trained parameters and the
// loss), so a frozen base pays only for the input gradient it needs.

var matrixType = nn.MatrixType()

// ---------------------------------------------------------------------------
// hᵀ = A·dropout(x)ᵀ

// downOp is the adapter's down-projection with inverted dropout fused in:
// hᵀ = A·(x∘m)ᵀ with m = 1/(1−p) for kept and 0 for dropped elements. Masks
// come from the graph's nn.DropoutSource (the training step, the rows'
// global position) with the adapter layer's own stream, so they are
// reproducible on resume and the same whichever data-parallel worker holds a
// row. Without a source (a graph built by hand) each run advances a private
// step, and a fresh graph replays the same masks. The mask stays on the op
// (one bit per element, nn.DropoutBits) for the backward of the same run,
// and x∘m is never stored: it is rebuilt in row blocks when needed.
type downOp struct {
	nn.OpBase
	rows, in, r int
	p           float64
	src         *nn.DropoutSource
	stream      uint64
	own         nn.DropoutSource // used when src is nil
	mask        []uint64         // bit i set: element i kept; nil without dropout
	out         nn.OutBuf
}

// downBlockElems is the number of elements of x∘m built at a time: 512 KiB,
// which stays in a core's L2 cache between the masking and the product.
const downBlockElems = 1 << 17

var blockPool = sync.Pool{New: func() any { return new([]float32) }}

func newDown(x, a *G.Node, p float64, src *nn.DropoutSource, stream uint64) (*G.Node, error) {
	xs, as := x.Shape(), a.Shape()
	if len(xs) != 2 || len(as) != 2 || xs[1] != as[1] {
		return nil, fmt.Errorf("lora: adapter down-projection: x %v and A %v do not fit", xs, as)
	}
	op := &downOp{OpBase: nn.NewOpBase(), rows: xs[0], in: xs[1], r: as[0], p: p, src: src, stream: stream}
	n, err := G.ApplyOp(op, x, a)
	if err != nil {
		return nil, fmt.Errorf("lora: adapter down-projection: %w", err)
	}
	return n, nil
}

func (op *downOp) Arity() int { return 2 }
func (op *downOp) Type() hm.Type {
	return hm.NewFnType(matrixType, matrixType, matrixType)
}
func (op *downOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.r, op.rows}, nil
}
func (op *downOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "lora.Down#%d(rows=%d, in=%d, r=%d, p=%v, stream=%d)", op.Serial(), op.rows, op.in, op.r, op.p, op.stream)
}
func (op *downOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *downOp) String() string   { return fmt.Sprintf("lora.Down(r=%d, dropout=%v)", op.r, op.p) }

// keep is the value of a kept mask element.
func (op *downOp) keep() float32 { return float32(1 / (1 - op.p)) }

// lowRank reports whether the adapter's products with rows of n elements
// run on the kernels' low-rank products (rank at most 8, rows on their
// 16-element steps, AVX-512), which read the activation where it lies and
// apply the mask bits as they load or store, instead of Sgemm, which
// copies the whole activation into its packed layout (and here a masked
// copy of it first). At SmolLM2-135M's shapes (rows 1,024, in 576 or
// 1,536, rank 8) the products of all seven adapters took about 9% of a
// bf16-base LoRA step's CPU time through Sgemm; BenchmarkAdapterProducts
// measures one layer both ways.
func lowRank(r, n int) bool { return r <= kernels.LowRankMax && kernels.LowRankAccelerated(n, 0) }

// maskBits returns the run's mask and the value of a kept element, or nil
// and 1 without dropout.
func (op *downOp) maskBits() ([]uint64, float32) {
	if op.p == 0 {
		return nil, 1
	}
	return op.mask, op.keep()
}

// fillMask draws the run's mask with nn.DropoutBits at the source's
// coordinates.
func (op *downOp) fillMask() error {
	n := op.rows * op.in
	if w := (n + 63) / 64; len(op.mask) != w {
		op.mask = make([]uint64, w)
	}
	src := op.src
	if src == nil {
		op.own.Step++
		src = &op.own
	}
	// The probability is checked once here (an empty draw); the chunks
	// then cannot fail, having whole words of the mask for their elements.
	if err := nn.DropoutBits(nil, 0, float32(op.p), src.Seed, src.Step, op.stream, 0); err != nil {
		return err
	}
	b := maskBody{mask: op.mask, n: n, p: float32(op.p), seed: src.Seed, step: src.Step, stream: op.stream, off: src.Row0 * uint64(op.in)}
	maskLoops.Run(0, b, len(op.mask), maskGrainWords)
	return nil
}

// maskGrainWords is the number of mask words drawn per chunk of
// fillMask's loop: 2¹⁸ elements, far above the cost of waking a helper.
// DropoutBits is a pure function of the element index, so drawing the
// words in chunks on several cores gives the same bits as one call. On one
// core, before kernels.DropoutWords vectorized the hashing, the masks of all
// seven rank-8 adapters of a SmolLM2-135M-shaped training step (B=4, T=256)
// took about 1.7% of its CPU time, all of it on the step's critical path.
const maskGrainWords = 1 << 12

var maskLoops kernels.Chunks[maskBody, *maskBody]

// maskBody draws the mask words [lo, hi) of fillMask.
type maskBody struct {
	mask                    []uint64
	n                       int
	p                       float32
	seed, step, stream, off uint64
}

func (b *maskBody) Chunk(lo, hi int) {
	e0 := lo * 64
	// Cannot fail: fillMask checked p, and the words hold their elements.
	_ = nn.DropoutBits(b.mask[lo:hi], min(b.n-e0, (hi-lo)*64), b.p, b.seed, b.step, b.stream, b.off+uint64(e0))
}

// applyMask writes src∘m into dst for the elements [lo, lo+len(dst)) of
// the mask; dst and src may be the same slice.
func (op *downOp) applyMask(dst, src []float32, lo int) {
	kernels.MaskScale(dst, src[:len(dst)], op.mask, lo, op.keep())
}

// blocks runs f over row blocks of x∘m (or over x itself without dropout).
func (op *downOp) blocks(x []float32, f func(xm []float32, r0, r1 int)) {
	if op.p == 0 {
		f(x, 0, op.rows)
		return
	}
	br := max(1, downBlockElems/op.in)
	sp := blockPool.Get().(*[]float32)
	defer blockPool.Put(sp)
	if cap(*sp) < br*op.in {
		*sp = make([]float32, br*op.in)
	}
	for r0 := 0; r0 < op.rows; r0 += br {
		r1 := min(r0+br, op.rows)
		xm := (*sp)[:(r1-r0)*op.in]
		op.applyMask(xm, x[r0*op.in:], r0*op.in)
		f(xm, r0, r1)
	}
}

func (op *downOp) Do(in ...G.Value) (G.Value, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("lora: down-projection: %d inputs, want 2", len(in))
	}
	x, err := nn.Float32s("lora", "down-projection", "adapter input", in[0], op.rows*op.in, nn.ErrShape)
	if err != nil {
		return nil, err
	}
	a, err := nn.Float32s("lora", "down-projection", "lora_A", in[1], op.r*op.in, nn.ErrShape)
	if err != nil {
		return nil, err
	}
	if op.p > 0 {
		if err := op.fillMask(); err != nil {
			return nil, fmt.Errorf("lora: adapter dropout: %w", err)
		}
	}
	t := op.out.Get(op.r, op.rows)
	ht := t.Float32s()
	if lowRank(op.r, op.in) {
		mask, keep := op.maskBits()
		kernels.LowRankDot(op.r, op.rows, op.in, keep, a, op.in, x, op.in, mask, 0, ht, op.rows)
		return t, nil
	}
	op.blocks(x, func(xm []float32, r0, r1 int) {
		// Columns [r0, r1) of hᵀ.
		kernels.Sgemm(false, true, op.r, r1-r0, op.in, 1, a, op.in, xm, op.in, 0, ht[r0:], op.rows)
	})
	return t, nil
}

func (op *downOp) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff: dx = (dh·A)∘m and dA = dhᵀ·(x∘m), both reading the mask of the
// forward run (the forward node is an input so the tape orders them after
// it); the incoming gradient is dhᵀ, [r, rows].
func (op *downOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, fmt.Errorf("lora: down-projection: %d inputs, want 2", len(inputs))
	}
	rows, in, r := op.rows, op.in, op.r
	dx, err := newGrad(op.Serial(), "DownGradX", inputs[0], rows, in, func(dst []float32, vals []G.Value) error {
		dht, err := nn.Float32s("lora", "DownGradX", "dh", vals[0], r*rows, nn.ErrShape)
		if err != nil {
			return err
		}
		a, err := nn.Float32s("lora", "DownGradX", "lora_A", vals[1], r*in, nn.ErrShape)
		if err != nil {
			return err
		}
		if lowRank(r, in) {
			mask, keep := op.maskBits()
			kernels.LowRankExpand(r, rows, in, keep, dht, rows, a, in, false, dst, in, mask, 0)
			return nil
		}
		// K = r either way; the untransposed A operand is the faster one.
		dh, put := transposed(dht, r, rows)
		defer put()
		kernels.Sgemm(false, false, rows, in, r, 1, dh, r, a, in, 0, dst, in)
		if op.p > 0 {
			op.applyMask(dst, dst, 0)
		}
		return nil
	}, grad, inputs[1], output)
	if err != nil {
		return nil, err
	}
	da, err := newGrad(op.Serial(), "DownGradA", inputs[1], r, in, func(dst []float32, vals []G.Value) error {
		dht, err := nn.Float32s("lora", "DownGradA", "dh", vals[0], r*rows, nn.ErrShape)
		if err != nil {
			return err
		}
		x, err := nn.Float32s("lora", "DownGradA", "x", vals[1], rows*in, nn.ErrShape)
		if err != nil {
			return err
		}
		if lowRank(r, in) {
			mask, keep := op.maskBits()
			kernels.LowRankOuter(r, rows, in, keep, dht, rows, x, in, mask, 0, dst, in)
			return nil
		}
		clear(dst)
		op.blocks(x, func(xm []float32, r0, r1 int) {
			kernels.Sgemm(false, false, r, in, r1-r0, 1, dht[r0:], rows, xm, in, 1, dst, in)
		})
		return nil
	}, grad, inputs[0], output)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, da}, nil
}

// transposed returns the [c, r] transpose of the [r, c] matrix m in a
// pooled buffer, and the function that returns the buffer.
func transposed(m []float32, r, c int) ([]float32, func()) {
	sp := blockPool.Get().(*[]float32)
	if cap(*sp) < r*c {
		*sp = make([]float32, r*c)
	}
	t := (*sp)[:r*c]
	transposeInto(t, m, r, c)
	return t, func() { blockPool.Put(sp) }
}

// transposeInto writes the transpose of the r×c matrix m into t (c×r).
func transposeInto(t, m []float32, r, c int) {
	for i := range r {
		for j, v := range m[i*c : (i+1)*c] {
			t[j*r+i] = v
		}
	}
}

// ---------------------------------------------------------------------------
// y = base + scale·h·Bᵀ

// upAddOp adds the adapter's scaled up-projection onto the base output; its
// h input is the down-projection's hᵀ, [r, rows].
// With inPlace it adds onto the base output's own memory and returns a view
// of it, so an adapted layer holds one rows×out activation rather than two;
// that is only correct when nothing else reads the base output, which
// holds for the bases whose ops are known (model.DenseLinear, quant.Linear
// and model.BF16Linear: their backward reads x and dy, never y), so Layer asks for
// it only with those.
type upAddOp struct {
	nn.OpBase
	rows, r, out int
	scale        float32
	inPlace      bool
	y            nn.OutBuf
}

func newUpAdd(base, ht, b *G.Node, scale float32, inPlace bool) (*G.Node, error) {
	bs, hs, ws := base.Shape(), ht.Shape(), b.Shape()
	if len(bs) != 2 || len(hs) != 2 || len(ws) != 2 || hs[1] != bs[0] || ws[0] != bs[1] || ws[1] != hs[0] {
		return nil, fmt.Errorf("lora: adapter up-projection: base %v, hᵀ %v, B %v do not fit", bs, hs, ws)
	}
	op := &upAddOp{OpBase: nn.NewOpBase(), rows: bs[0], r: hs[0], out: bs[1], scale: scale, inPlace: inPlace}
	n, err := G.ApplyOp(op, base, ht, b)
	if err != nil {
		return nil, fmt.Errorf("lora: adapter up-projection: %w", err)
	}
	return n, nil
}

func (op *upAddOp) Arity() int { return 3 }
func (op *upAddOp) Type() hm.Type {
	return hm.NewFnType(matrixType, matrixType, matrixType, matrixType)
}
func (op *upAddOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.out}, nil
}
func (op *upAddOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "lora.UpAdd#%d(rows=%d, r=%d, out=%d, scale=%v, inPlace=%t)", op.Serial(), op.rows, op.r, op.out, op.scale, op.inPlace)
}
func (op *upAddOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *upAddOp) String() string   { return fmt.Sprintf("lora.UpAdd(r=%d, scale=%v)", op.r, op.scale) }

func (op *upAddOp) Do(in ...G.Value) (G.Value, error) {
	if len(in) != 3 {
		return nil, fmt.Errorf("lora: up-projection: %d inputs, want 3", len(in))
	}
	base, err := nn.Float32s("lora", "up-projection", "base output", in[0], op.rows*op.out, nn.ErrShape)
	if err != nil {
		return nil, err
	}
	ht, err := nn.Float32s("lora", "up-projection", "adapter activation", in[1], op.r*op.rows, nn.ErrShape)
	if err != nil {
		return nil, err
	}
	b, err := nn.Float32s("lora", "up-projection", "lora_B", in[2], op.out*op.r, nn.ErrShape)
	if err != nil {
		return nil, err
	}
	var t *tensor.Dense
	if op.inPlace {
		t = op.y.View(base, op.rows, op.out)
	} else {
		t = op.y.Get(op.rows, op.out)
		copy(t.Float32s(), base)
	}
	// y += scale·h·Bᵀ; with B = 0 this adds exact zeros.
	if lowRank(op.r, op.out) {
		bt, put := transposed(b, op.out, op.r)
		defer put()
		kernels.LowRankExpand(op.r, op.rows, op.out, op.scale, ht, op.rows, bt, op.out, true, t.Float32s(), op.out, nil, 0)
		return t, nil
	}
	h, put := transposed(ht, op.r, op.rows)
	defer put()
	kernels.Sgemm(false, true, op.rows, op.out, op.r, op.scale, h, op.r, b, op.r, 1, t.Float32s(), op.out)
	return t, nil
}

func (op *upAddOp) DiffWRT(int) []bool { return []bool{true, true, true} }

// SymDiff: d(base) = dy (passed through), dhᵀ = scale·Bᵀ·dyᵀ,
// dB = scale·dyᵀ·h (computed as its transpose scale·hᵀ·dy, r rows).
func (op *upAddOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 3 {
		return nil, fmt.Errorf("lora: up-projection: %d inputs, want 3", len(inputs))
	}
	rows, r, out, s := op.rows, op.r, op.out, op.scale
	dh, err := upGradHNode(op.Serial(), "UpAddGradH", inputs[1], inputs[2], grad, rows, out, r, s)
	if err != nil {
		return nil, err
	}
	db, err := newGrad(op.Serial(), "UpAddGradB", inputs[2], out, r, func(dst []float32, vals []G.Value) error {
		dy, err := nn.Float32s("lora", "UpAddGradB", "dy", vals[0], rows*out, nn.ErrShape)
		if err != nil {
			return err
		}
		ht, err := nn.Float32s("lora", "UpAddGradB", "h", vals[1], r*rows, nn.ErrShape)
		if err != nil {
			return err
		}
		upGradB(dst, dy, ht, rows, out, r, s)
		return nil
	}, grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{grad, dh, db}, nil
}

// upGradHNode is the gradient node of an up-projection's input hᵀ (the
// node h, [r, rows]): upGradH over the output gradient grad and B (the
// node b), under the op name name; fwd is the forward op's serial.
func upGradHNode(fwd uint64, name string, h, b, grad *G.Node, rows, out, r int, s float32) (*G.Node, error) {
	return newGrad(fwd, name, h, r, rows, func(dst []float32, vals []G.Value) error {
		dy, err := nn.Float32s("lora", name, "dy", vals[0], rows*out, nn.ErrShape)
		if err != nil {
			return err
		}
		bw, err := nn.Float32s("lora", name, "lora_B", vals[1], out*r, nn.ErrShape)
		if err != nil {
			return err
		}
		upGradH(dst, dy, bw, rows, out, r, s)
		return nil
	}, grad, b)
}

// upGradH computes the up-projection's dhᵀ = s·Bᵀ·dyᵀ ([r, rows]) from dy
// [rows, out] and B [out, r].
func upGradH(dst, dy, b []float32, rows, out, r int, s float32) {
	if lowRank(r, out) {
		bt, put := transposed(b, out, r)
		defer put()
		kernels.LowRankDot(r, rows, out, s, bt, out, dy, out, nil, 0, dst, rows)
		return
	}
	kernels.Sgemm(true, true, r, rows, out, s, b, r, dy, out, 0, dst, rows)
}

// upGradB computes the up-projection's dB = s·dyᵀ·h ([out, r]) from dy
// [rows, out] and hᵀ [r, rows], as its transpose s·hᵀ·dy (r rows).
func upGradB(dst, dy, ht []float32, rows, out, r int, s float32) {
	sp := blockPool.Get().(*[]float32)
	defer blockPool.Put(sp)
	if cap(*sp) < r*out {
		*sp = make([]float32, r*out)
	}
	dbt := (*sp)[:r*out]
	if lowRank(r, out) {
		kernels.LowRankOuter(r, rows, out, s, ht, rows, dy, out, nil, 0, dbt, out)
	} else {
		kernels.Sgemm(false, false, r, out, rows, s, ht, rows, dy, out, 0, dbt, out)
	}
	transposeInto(dst, dbt, r, out)
}

// ---------------------------------------------------------------------------
// backward ops

// newGrad is nn.NewGrad for the ops of this file.
func newGrad(fwd uint64, name string, target *G.Node, r, c int, run func([]float32, []G.Value) error, inputs ...*G.Node) (*G.Node, error) {
	return nn.NewGrad("lora", name, fwd, target, r, c, run, inputs...)
}
