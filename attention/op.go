package attention

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Impl selects the implementation behind an attention op.
type Impl int

const (
	// Flash is the FlashAttention implementation (Forward, Backward), the
	// default.
	Flash Impl = iota
	// Naive materializes the score matrix (NaiveForward, NaiveBackward); it
	// is the model's reference.
	Naive
)

// String returns "flash" or "naive".
func (i Impl) String() string {
	switch i {
	case Flash:
		return "flash"
	case Naive:
		return "naive"
	}
	return fmt.Sprintf("Impl(%d)", int(i))
}

// OpOptions configures the gorgonia attention ops.
type OpOptions struct {
	// B and T are the batch size and sequence length; the packed input of
	// Op has B·T rows. OpQKV reads them from its inputs' shapes (if set here
	// they must match).
	B, T int
	// H is the number of query heads and KVH the number of key/value heads
	// (zero means H). OpQKV reads them from its inputs.
	H, KVH int
	// Causal, Scale, Window and Lengths are as in Options.
	Causal  bool
	Scale   float32 // as Options.Scale
	Window  int     // as Options.Window
	Lengths []int   // as Options.Lengths
	// Impl picks FlashAttention (the zero value) or the naive reference.
	Impl Impl
	// BlockQ, BlockK and Workers are as in Options.
	BlockQ, BlockK, Workers int
	// Rope, when set, makes Op rotate the q and k heads of its packed input
	// by rotary position embeddings (nn.RopeForward, Hugging Face's
	// rotate-half convention) before attention, and rotate dq and dk back in
	// its gradient: the Llama family's positions without two RoPE nodes and
	// two gradient nodes in the graph. OpQKV does not take it.
	Rope *Rope
}

// Rope is the rotary position embedding that Op applies (OpOptions.Rope).
type Rope struct {
	// Positions holds the position of each of the B·T rows (see
	// nn.SequencePositions), read at every run like token ids.
	Positions *nn.IDs
	// InvFreq holds the D/2 inverse frequencies (nn.RopeFreqs).
	InvFreq []float32
}

func (o *OpOptions) kernelOptions() Options {
	return Options{Scale: o.Scale, Causal: o.Causal, Window: o.Window, Lengths: o.Lengths, BlockQ: o.BlockQ, BlockK: o.BlockK, Workers: o.Workers}
}

// writeHash writes every option, so that gorgonia merges only nodes that
// compute the same thing.
func (o *OpOptions) writeHash(h hash.Hash, kind string, d int) {
	fmt.Fprintf(h, "attention.%s(impl=%d B=%d T=%d H=%d KVH=%d D=%d causal=%t scale=%#x window=%d lengths=%v bq=%d bk=%d workers=%d)",
		kind, o.Impl, o.B, o.T, o.H, o.KVH, d, o.Causal, math.Float32bits(o.Scale), o.Window, o.Lengths, o.BlockQ, o.BlockK, o.Workers)
	if o.Rope != nil {
		fmt.Fprintf(h, " rope(pos=%p, freqs=%v)", o.Rope.Positions, o.Rope.InvFreq)
	}
}

var (
	matrixType = nn.MatrixType()
	rank4Type  = G.TensorType{Dims: 4, Of: tensor.Float32}
)

// Op adds self-attention over a packed QKV matrix to qkv's graph. qkv is the
// output of the fused QKV projection, [B·T, (H+2·KVH)·D] (see PackedQKV);
// the result is the attention output [B·T, H·D] (see PackedHeads), ready for
// the output projection. The gradient of qkv is one [B·T, (H+2·KVH)·D]
// tensor with dq, dk and dv in their column ranges, computed by one fused
// backward op from the log-sum-exp that the forward op keeps.
func Op(qkv *G.Node, opts OpOptions) (*G.Node, error) {
	if opts.KVH == 0 {
		opts.KVH = opts.H
	}
	if qkv == nil {
		return nil, fmt.Errorf("attention: Op: nil input: %w", ErrShape)
	}
	if opts.B <= 0 || opts.T <= 0 || opts.H <= 0 || opts.KVH <= 0 || opts.H%opts.KVH != 0 {
		return nil, fmt.Errorf("attention: Op: B=%d T=%d H=%d KVH=%d: %w", opts.B, opts.T, opts.H, opts.KVH, ErrShape)
	}
	s := qkv.Shape()
	if qkv.Dtype() != tensor.Float32 || len(s) != 2 {
		return nil, fmt.Errorf("attention: Op: input %v of %v, want a float32 matrix: %w", s, qkv.Dtype(), ErrShape)
	}
	heads := opts.H + 2*opts.KVH
	if s[0] != opts.B*opts.T || s[1] <= 0 || s[1]%heads != 0 {
		return nil, fmt.Errorf("attention: Op: input %v, want [B·T=%d, (H+2·KVH)·D] with H+2·KVH=%d: %w", s, opts.B*opts.T, heads, ErrShape)
	}
	if opts.Lengths != nil {
		opts.Lengths = append([]int(nil), opts.Lengths...)
	}
	if r := opts.Rope; r != nil {
		d := s[1] / heads
		if r.Positions == nil || len(r.Positions.Data) != opts.B*opts.T || d%2 != 0 || len(r.InvFreq) != d/2 {
			return nil, fmt.Errorf("attention: Op: rope needs B·T=%d positions and D/2=%d frequencies (D=%d even): %w", opts.B*opts.T, d/2, d, ErrOption)
		}
		opts.Rope = &Rope{Positions: r.Positions, InvFreq: append([]float32(nil), r.InvFreq...)}
	}
	op := &packedOp{opts: opts, d: s[1] / heads}
	if err := op.check(); err != nil {
		return nil, err
	}
	n, err := G.ApplyOp(op, qkv)
	if err != nil {
		return nil, fmt.Errorf("attention: Op: %w", err)
	}
	return n, nil
}

// packedOp is the forward op of Op.
type packedOp struct {
	nn.OpDefaults
	opts OpOptions
	d    int
	lse  []float32 // saved by Do for the backward op of the same run
	out  nn.OutBuf
	rot  []float32 // with opts.Rope: the input with q and k rotated, saved by Do for the backward op
}

// check validates the options against the shapes once, at graph building.
func (op *packedOp) check() error {
	o := &op.opts
	p := &problem{B: o.B, H: o.H, KVH: o.KVH, G: o.H / o.KVH, Tq: o.T, Tk: o.T, D: op.d}
	if o.Impl != Flash && o.Impl != Naive {
		return fmt.Errorf("attention: Op: implementation %v: %w", o.Impl, ErrOption)
	}
	opts := o.kernelOptions()
	return p.resolve(&opts, false, 0)
}

func (op *packedOp) width() int { return (op.opts.H + 2*op.opts.KVH) * op.d }

func (op *packedOp) Arity() int { return 1 }

func (op *packedOp) Type() hm.Type { return hm.NewFnType(matrixType, matrixType) }

func (op *packedOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.opts.B * op.opts.T, op.opts.H * op.d}, nil
}

// compute runs the forward pass into dst ([B·T, H·D]).
func (op *packedOp) compute(dst []float32, in []G.Value) error {
	if len(in) != 1 {
		return fmt.Errorf("attention: Op: %d inputs, want 1: %w", len(in), ErrShape)
	}
	o := &op.opts
	data, err := f32s("Op", "qkv", in[0], o.B*o.T*op.width())
	if err != nil {
		return err
	}
	if o.Rope != nil {
		if len(op.rot) != len(data) {
			op.rot = make([]float32, len(data))
		}
		if err := nn.RopeForward(op.rot, data, op.width(), o.H+o.KVH, op.d, o.Rope.Positions.Data, o.Rope.InvFreq); err != nil {
			return fmt.Errorf("attention: Op: %w", err)
		}
		data = op.rot
	}
	q, k, v, err := PackedQKV(data, o.B, o.T, o.H, o.KVH, op.d)
	if err != nil {
		return err
	}
	out, err := PackedHeads(dst, o.B, o.T, o.H, op.d)
	if err != nil {
		return err
	}
	if n := o.B * o.H * o.T; len(op.lse) != n {
		op.lse = make([]float32, n)
	}
	if o.Impl == Naive {
		return NaiveForwardInto(out, op.lse, q, k, v, o.kernelOptions())
	}
	return ForwardInto(out, op.lse, q, k, v, o.kernelOptions())
}

// Do computes the attention output into a buffer owned by the op, reused by
// later runs.
func (op *packedOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.opts.B*op.opts.T, op.opts.H*op.d, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo computes the attention output into prealloc.
func (op *packedOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return nn.PreallocDo("attention", "Op", prealloc, op.opts.B*op.opts.T*op.opts.H*op.d, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *packedOp) WriteHash(h hash.Hash) { op.opts.writeHash(h, "Packed", op.d) }
func (op *packedOp) Hashcode() uint32      { return nn.OpHash(op) }
func (op *packedOp) String() string {
	return fmt.Sprintf("attention.Packed[%v](B=%d T=%d H=%d KVH=%d D=%d causal=%t)", op.opts.Impl, op.opts.B, op.opts.T, op.opts.H, op.opts.KVH, op.d, op.opts.Causal)
}

// DiffWRT reports that qkv has a gradient.
func (op *packedOp) DiffWRT(int) []bool { return []bool{true} }

// SymDiff returns the gradient node of qkv: one fused backward op reading
// qkv, the forward output and its gradient, and the log-sum-exp saved on op.
func (op *packedOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, fmt.Errorf("attention: Op: SymDiff with %d inputs: %w", len(inputs), ErrShape)
	}
	n, err := G.ApplyOp(&packedGradOp{fwd: op}, inputs[0], output, grad)
	if err != nil {
		return nil, fmt.Errorf("attention: Op gradient: %w", err)
	}
	return G.Nodes{n}, nil
}

// packedGradOp is the backward op of Op: (qkv, out, dOut) → dqkv.
type packedGradOp struct {
	nn.OpDefaults
	fwd *packedOp
	out nn.OutBuf
}

func (op *packedGradOp) Arity() int { return 3 }

func (op *packedGradOp) Type() hm.Type {
	return hm.NewFnType(matrixType, matrixType, matrixType, matrixType)
}

func (op *packedGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	f := op.fwd
	return tensor.Shape{f.opts.B * f.opts.T, f.width()}, nil
}

func (op *packedGradOp) compute(dst []float32, in []G.Value) error {
	if len(in) != 3 {
		return fmt.Errorf("attention: Op gradient: %d inputs, want 3: %w", len(in), ErrShape)
	}
	f := op.fwd
	o := &f.opts
	rows, w := o.B*o.T, f.width()
	data, err := f32s("Op gradient", "qkv", in[0], rows*w)
	if err != nil {
		return err
	}
	if o.Rope != nil {
		if len(f.rot) != len(data) {
			return fmt.Errorf("attention: Op gradient ran before its forward op: %w", ErrShape)
		}
		data = f.rot
	}
	outData, err := f32s("Op gradient", "output", in[1], rows*o.H*f.d)
	if err != nil {
		return err
	}
	gradData, err := f32s("Op gradient", "output gradient", in[2], rows*o.H*f.d)
	if err != nil {
		return err
	}
	q, k, v, err := PackedQKV(data, o.B, o.T, o.H, o.KVH, f.d)
	if err != nil {
		return err
	}
	dq, dk, dv, err := PackedQKV(dst, o.B, o.T, o.H, o.KVH, f.d)
	if err != nil {
		return err
	}
	out, err := PackedHeads(outData, o.B, o.T, o.H, f.d)
	if err != nil {
		return err
	}
	dOut, err := PackedHeads(gradData, o.B, o.T, o.H, f.d)
	if err != nil {
		return err
	}
	if o.Impl == Naive {
		err = NaiveBackwardInto(dq, dk, dv, q, k, v, out, nil, dOut, o.kernelOptions())
	} else {
		if len(f.lse) != o.B*o.H*o.T {
			return fmt.Errorf("attention: Op gradient ran before its forward op: %w", ErrShape)
		}
		err = BackwardInto(dq, dk, dv, q, k, v, out, f.lse, dOut, o.kernelOptions())
	}
	if err != nil || o.Rope == nil {
		return err
	}
	// The gradient of the unrotated q and k is the inverse rotation of
	// that of the rotated ones.
	if err := nn.RopeInverse(dst, dst, w, o.H+o.KVH, f.d, o.Rope.Positions.Data, o.Rope.InvFreq); err != nil {
		return fmt.Errorf("attention: Op gradient: %w", err)
	}
	return nil
}

// Do computes the qkv gradient into a buffer owned by the op.
func (op *packedGradOp) Do(in ...G.Value) (G.Value, error) {
	f := op.fwd
	return op.out.Do(f.opts.B*f.opts.T, f.width(), func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo computes the qkv gradient into prealloc.
func (op *packedGradOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	f := op.fwd
	return nn.PreallocDo("attention", "Op gradient", prealloc, f.opts.B*f.opts.T*f.width(), ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *packedGradOp) WriteHash(h hash.Hash) {
	op.fwd.opts.writeHash(h, "PackedGrad", op.fwd.d)
}
func (op *packedGradOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *packedGradOp) String() string   { return "∂" + op.fwd.String() }

// f32s returns the n float32s of input what of op fn (see nn.Float32s); a
// non-contiguous view is copied first. (An output, e.g. prealloc, is checked
// with nn.Float32s itself: writing into a copy would lose the result.)
func f32s(fn, what string, v G.Value, n int) ([]float32, error) {
	if d, ok := v.(*tensor.Dense); ok && d.Dtype() == tensor.Float32 && d.RequiresIterator() {
		m, ok := d.Materialize().(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("attention: %s: %s: cannot materialize a view: %w", fn, what, ErrShape)
		}
		v = m
	}
	return nn.Float32s("attention", fn, what, v, n, ErrShape)
}
