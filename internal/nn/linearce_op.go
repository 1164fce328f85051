package nn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// LinearCEOpts configures LinearCrossEntropy.
type LinearCEOpts struct {
	// TransW says W is [V, D] (a head tied to the embedding wte) rather
	// than [D, V].
	TransW bool
	// Chunk is the number of rows whose logits are held at once; 0 means
	// LinearCEChunk(V).
	Chunk int
	// Release makes the op drop its chunk of logits at the end of every
	// run (and allocate it again at the next) instead of keeping it: for a
	// graph whose backward pass allocates memory of its own after the op
	// ran (gradient checkpointing recomputes each block there), where
	// kept logits would add to that pass's peak.
	Release bool
}

type linearCEOp struct {
	OpBase
	targets    *IDs
	rows, D, V int
	opts       LinearCEOpts
	scratch    *LinearCEScratch
	loss       G.F32 // the op's output value, reused by every run
	// w16 is a frozen bfloat16 weight (LinearCrossEntropyBF16); the op's
	// only input is then x.
	w16 []uint16

	// Set by SymDiff: the inputs whose gradients the backward ops return.
	// Do computes them during the forward pass, while it holds each chunk
	// of logits, for the inputs G.Grad gave a derivative.
	x, w   *G.Node
	dx, dw OutBuf
	ran    [2]bool // whether the last Do computed dx, dw
}

// LinearCrossEntropy adds the output head and the mean cross-entropy fused:
// the loss of the logits x·W against targets (read at every run), as a
// float32 scalar, with x [rows, D] (rows = B·T) and W [D, V], or [V, D] with
// opts.TransW. It follows LinearCrossEntropyBackward: rows whose target is
// IgnoreIndex are left out of the loss and the mean, and no more than
// opts.Chunk rows of logits exist at once, in the forward or the backward
// pass. When the graph is differentiated, the forward op computes dx and dW
// (for whichever of x and W has a derivative) along with the loss, and the
// backward ops only scale them by the upstream gradient; so each run costs
// three products over the vocabulary, not the four that recomputing the
// logits would take. The op holds dW's memory, [D, V] floats. Whether to
// compute the gradients is decided from the inputs' derivatives, not from
// which nodes a machine runs: a machine compiled for the loss alone out of a
// differentiated graph still pays for them, so evaluate with
// LinearCrossEntropyForward or a graph built without G.Grad.
func LinearCrossEntropy(x, w *G.Node, targets *IDs, opts LinearCEOpts) (*G.Node, error) {
	const fn = "LinearCrossEntropy"
	if err := targets.check(fn); err != nil {
		return nil, err
	}
	xs, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	ws, err := nodeShape(fn, "w", w, 2)
	if err != nil {
		return nil, err
	}
	if xs[0] != len(targets.Data) {
		return nil, shapeErr(fn, "x %v for %d×%d targets", xs, targets.B, targets.T)
	}
	D, V := ws[0], ws[1]
	if opts.TransW {
		D, V = V, D
	}
	if D != xs[1] {
		return nil, shapeErr(fn, "x %v with w %v (transW %t)", xs, ws, opts.TransW)
	}
	if opts.Chunk < 0 {
		return nil, shapeErr(fn, "chunk %d must be non-negative", opts.Chunk)
	}
	if opts.Chunk == 0 {
		opts.Chunk = LinearCEChunk(V)
	}
	opts.Chunk = equalChunk(xs[0], opts.Chunk)
	op := &linearCEOp{OpBase: NewOpBase(), targets: targets, rows: xs[0], D: D, V: V, opts: opts}
	return apply(fn, op, x, w)
}

// LinearCrossEntropyBF16 is LinearCrossEntropy with a frozen head whose
// weight w, D·V values in the layout opts.TransW names, is held in
// bfloat16 (a Hugging Face BF16 checkpoint's embedding or lm_head kept as
// stored): the op's one input is x, and its products, the logits and dx,
// run on kernels.GemmBF16 (LinearCrossEntropyBackwardBF16). W gets no
// gradient. Use LinearCEFrozenChunk's rows unless opts.Chunk says
// otherwise.
func LinearCrossEntropyBF16(x *G.Node, w []uint16, targets *IDs, opts LinearCEOpts) (*G.Node, error) {
	const fn = "LinearCrossEntropyBF16"
	if err := targets.check(fn); err != nil {
		return nil, err
	}
	xs, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	if xs[0] != len(targets.Data) {
		return nil, shapeErr(fn, "x %v for %d×%d targets", xs, targets.B, targets.T)
	}
	D := xs[1]
	if D == 0 || len(w) == 0 || len(w)%D != 0 {
		return nil, shapeErr(fn, "w of %d values for x %v", len(w), xs)
	}
	V := len(w) / D
	if opts.Chunk < 0 {
		return nil, shapeErr(fn, "chunk %d must be non-negative", opts.Chunk)
	}
	if opts.Chunk == 0 {
		opts.Chunk = LinearCEFrozenChunk(V)
	}
	opts.Chunk = equalChunk(xs[0], opts.Chunk)
	op := &linearCEOp{OpBase: NewOpBase(), targets: targets, rows: xs[0], D: D, V: V, opts: opts, w16: w}
	return apply(fn, op, x)
}

func (op *linearCEOp) Arity() int {
	if op.w16 != nil {
		return 1
	}
	return 2
}

func (op *linearCEOp) Type() hm.Type {
	if op.w16 != nil {
		return hm.NewFnType(matrixType, tensor.Float32)
	}
	return hm.NewFnType(matrixType, matrixType, tensor.Float32)
}

func (op *linearCEOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

// Do computes the loss, and the gradients the backward ops will need.
// The returned value is the op's own scalar, overwritten by the next run.
func (op *linearCEOp) Do(in ...G.Value) (G.Value, error) {
	const fn = "LinearCrossEntropy"
	if err := checkArity(fn, len(in), op.Arity()); err != nil {
		return nil, err
	}
	if err := op.targets.check(fn); err != nil {
		return nil, err
	}
	if len(op.targets.Data) != op.rows {
		return nil, shapeErr(fn, "%d targets for %d rows of x", len(op.targets.Data), op.rows)
	}
	x, err := Float32s("nn", fn, "x", in[0], op.rows*op.D, ErrShape)
	if err != nil {
		return nil, err
	}
	var w []float32
	if op.w16 == nil {
		if w, err = Float32s("nn", fn, "w", in[1], op.D*op.V, ErrShape); err != nil {
			return nil, err
		}
	}
	scratch := op.scratch
	if scratch == nil {
		scratch = NewLinearCEScratch(op.opts.Chunk, op.V)
		if !op.opts.Release {
			op.scratch = scratch
		}
	}
	var dx, dw []float32
	op.ran = [2]bool{op.x != nil && op.x.Deriv() != nil, op.w != nil && op.w.Deriv() != nil}
	if op.ran[0] {
		dx = op.dx.Get(op.rows, op.D).Float32s()
		clear(dx)
	}
	if op.ran[1] {
		r, c := op.D, op.V
		if op.opts.TransW {
			r, c = c, r
		}
		dw = op.dw.Get(r, c).Float32s()
		clear(dw)
	}
	var sum float64
	var count int
	switch {
	case op.w16 != nil && dx != nil:
		sum, count, err = LinearCrossEntropyBackwardBF16(scratch, dx, x, op.w16, op.targets.Data, op.D, op.V, op.opts.TransW, 1)
	case op.w16 != nil:
		sum, count, err = LinearCrossEntropyForwardBF16(scratch, x, op.w16, op.targets.Data, op.D, op.V, op.opts.TransW)
	case dx != nil || dw != nil:
		sum, count, err = LinearCrossEntropyBackward(scratch, dx, dw, x, w, op.targets.Data, op.D, op.V, op.opts.TransW, 1)
	default:
		sum, count, err = LinearCrossEntropyForward(scratch, x, w, op.targets.Data, op.D, op.V, op.opts.TransW)
	}
	if err != nil {
		return nil, err
	}
	op.loss = 0
	if count > 0 {
		op.loss = G.F32(sum / float64(count))
	}
	return &op.loss, nil
}

func (op *linearCEOp) DiffWRT(n int) []bool {
	return AllDiff(n)
}

// SymDiff builds the dx and dW ops, which scale what Do computed by the
// upstream gradient.
func (op *linearCEOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, checkArity("LinearCrossEntropy.SymDiff", len(inputs), op.Arity())
	}
	op.x = inputs[0]
	if op.w16 == nil {
		op.w = inputs[1]
	}
	var out G.Nodes
	for i, in := range inputs {
		s := in.Shape()
		g := &linearCEGradOp{OpBase: NewOpBase(), fwd: op, which: i, r: s[0], c: s[1],
			typ: hm.NewFnType(output.Type(), grad.Type(), matrixType)}
		n, err := apply("LinearCrossEntropyGrad", g, output, grad)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (op *linearCEOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.LinearCrossEntropy#%d(rows=%d, D=%d, V=%d, transW=%t, chunk=%d, targets=%p, bf16=%t)",
		op.serial, op.rows, op.D, op.V, op.opts.TransW, op.opts.Chunk, op.targets, op.w16 != nil)
}

func (op *linearCEOp) Hashcode() uint32 { return OpHash(op) }

func (op *linearCEOp) String() string {
	return fmt.Sprintf("nn.LinearCrossEntropy(D=%d, V=%d, transW=%t)", op.D, op.V, op.opts.TransW)
}

// linearCEGradOp returns the gradient of one input of a linearCEOp (which:
// 0 for x, 1 for W) as a view of the buffer the forward op filled, scaled in
// place by the upstream gradient.
type linearCEGradOp struct {
	OpBase
	fwd          *linearCEOp
	which        int
	r, c         int
	typ          hm.Type
	view, placeh OutBuf
}

func (op *linearCEGradOp) target() *G.Node {
	if op.which == 0 {
		return op.fwd.x
	}
	return op.fwd.w
}

func (op *linearCEGradOp) Arity() int { return 2 }

func (op *linearCEGradOp) Type() hm.Type { return op.typ }

func (op *linearCEGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.r, op.c}, nil
}

// Do scales the forward op's gradient by the upstream gradient, or returns a
// 1×1 placeholder when the input needs none (as gradOp does).
func (op *linearCEGradOp) Do(in ...G.Value) (G.Value, error) {
	const fn = "LinearCrossEntropyGrad"
	if op.target().Deriv() == nil {
		return op.placeh.Get(1, 1), nil
	}
	if err := checkArity(fn, len(in), 2); err != nil {
		return nil, err
	}
	if !op.fwd.ran[op.which] {
		return nil, shapeErr(fn, "the forward op did not compute this gradient")
	}
	g, err := scalarF32(fn, in[1])
	if err != nil {
		return nil, err
	}
	buf := &op.fwd.dx
	if op.which == 1 {
		buf = &op.fwd.dw
	}
	d := buf.Get(op.r, op.c).Float32s()
	if g != 1 {
		scaleVec(g, d)
	}
	return op.view.View(d, op.r, op.c), nil
}

func (op *linearCEGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.LinearCrossEntropyGrad#%d(fwd#%d, input %d)", op.serial, op.fwd.serial, op.which)
}

func (op *linearCEGradOp) Hashcode() uint32 { return OpHash(op) }

func (op *linearCEGradOp) String() string {
	return fmt.Sprintf("nn.LinearCrossEntropyGrad(fwd#%d, input %d)", op.fwd.serial, op.which)
}

// scaleVec multiplies x by a in place, in parallel chunks (dW may be tens of
// millions of floats).
func scaleVec(a float32, x []float32) {
	scaleVecLoops.Run(0, scaleVecBody{x, a}, len(x), parGrain)
}

// scaleVecBody is the loop body of scaleVec.
type scaleVecBody struct {
	x []float32
	a float32
}

var scaleVecLoops kernels.Chunks[scaleVecBody, *scaleVecBody]

func (b *scaleVecBody) Chunk(lo, hi int) {
	x, a := b.x[lo:hi], b.a
	for i := range x {
		x[i] *= a
	}
}
