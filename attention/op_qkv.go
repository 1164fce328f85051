package attention

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// OpQKV adds attention over separate contiguous q [B, H, T, D], k and v
// [B, KVH, T, D] nodes to their graph and returns the output node
// [B, H, T, D]. B, T, H and KVH come from the shapes (if set in opts they
// must match). The three gradients come from one fused backward op: the
// gradient node of q runs it and keeps dk and dv, which the gradient nodes
// of k and v return.
func OpQKV(q, k, v *G.Node, opts OpOptions) (*G.Node, error) {
	if q == nil || k == nil || v == nil {
		return nil, fmt.Errorf("attention: OpQKV: nil input: %w", ErrShape)
	}
	var dims [3]tensor.Shape
	for i, n := range []*G.Node{q, k, v} {
		s := n.Shape()
		if n.Dtype() != tensor.Float32 || len(s) != 4 {
			return nil, fmt.Errorf("attention: OpQKV: input %d is %v of %v, want a float32 [B, H, T, D] tensor: %w", i, s, n.Dtype(), ErrShape)
		}
		dims[i] = s
	}
	qs, ks := dims[0], dims[1]
	if !ks.Eq(dims[2]) || qs[0] != ks[0] || qs[2] != ks[2] || qs[3] != ks[3] || ks[1] <= 0 || qs[1]%ks[1] != 0 {
		return nil, fmt.Errorf("attention: OpQKV: q %v, k %v, v %v: %w", qs, ks, dims[2], ErrShape)
	}
	for _, c := range []struct{ set, got int }{{opts.B, qs[0]}, {opts.H, qs[1]}, {opts.T, qs[2]}, {opts.KVH, ks[1]}} {
		if c.set != 0 && c.set != c.got {
			return nil, fmt.Errorf("attention: OpQKV: options B=%d H=%d T=%d KVH=%d disagree with q %v, k %v: %w", opts.B, opts.H, opts.T, opts.KVH, qs, ks, ErrShape)
		}
	}
	if opts.Rope != nil {
		return nil, fmt.Errorf("attention: OpQKV: rope is applied by Op (packed input) only: %w", ErrOption)
	}
	opts.B, opts.H, opts.T, opts.KVH = qs[0], qs[1], qs[2], ks[1]
	if opts.Lengths != nil {
		opts.Lengths = append([]int(nil), opts.Lengths...)
	}
	op := &qkvOp{packedOp{opts: opts, d: qs[3]}}
	if err := op.check(); err != nil {
		return nil, err
	}
	n, err := G.ApplyOp(op, q, k, v)
	if err != nil {
		return nil, fmt.Errorf("attention: OpQKV: %w", err)
	}
	return n, nil
}

// qkvOp is the forward op of OpQKV. It reuses packedOp's options, saved
// log-sum-exp and output buffer.
type qkvOp struct{ packedOp }

func (op *qkvOp) Arity() int { return 3 }

func (op *qkvOp) Type() hm.Type { return hm.NewFnType(rank4Type, rank4Type, rank4Type, rank4Type) }

func (op *qkvOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	o := &op.opts
	return tensor.Shape{o.B, o.H, o.T, op.d}, nil
}

// views returns the contiguous tensors of q, k, v values, read by op fn.
func (op *qkvOp) views(fn string, in []G.Value) (q, k, v Tensor, err error) {
	o := &op.opts
	var ts [3]Tensor
	for i, heads := range []int{o.H, o.KVH, o.KVH} {
		data, err := f32s(fn, []string{"q", "k", "v"}[i], in[i], o.B*heads*o.T*op.d)
		if err != nil {
			return q, k, v, err
		}
		if ts[i], err = Contiguous(data, o.B, heads, o.T, op.d); err != nil {
			return q, k, v, err
		}
	}
	return ts[0], ts[1], ts[2], nil
}

func (op *qkvOp) compute(dst []float32, in []G.Value) error {
	if len(in) != 3 {
		return fmt.Errorf("attention: OpQKV: %d inputs, want 3: %w", len(in), ErrShape)
	}
	q, k, v, err := op.views("OpQKV", in)
	if err != nil {
		return err
	}
	o := &op.opts
	out, err := Contiguous(dst, o.B, o.H, o.T, op.d)
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

// Do computes the attention output into a buffer owned by the op.
func (op *qkvOp) Do(in ...G.Value) (G.Value, error) {
	o := &op.opts
	t := op.out.GetShape(o.B, o.H, o.T, op.d)
	if err := op.compute(t.Float32s(), in); err != nil {
		return nil, err
	}
	return t, nil
}

// UsePreallocDo computes the attention output into prealloc.
func (op *qkvOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	o := &op.opts
	return nn.PreallocDo("attention", "OpQKV", prealloc, o.B*o.H*o.T*op.d, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *qkvOp) WriteHash(h hash.Hash) { op.opts.writeHash(h, "QKV", op.d) }
func (op *qkvOp) Hashcode() uint32      { return nn.OpHash(op) }
func (op *qkvOp) String() string {
	return fmt.Sprintf("attention.QKV[%v](B=%d T=%d H=%d KVH=%d D=%d causal=%t)", op.opts.Impl, op.opts.B, op.opts.T, op.opts.H, op.opts.KVH, op.d, op.opts.Causal)
}

// DiffWRT reports that q, k and v have gradients.
func (op *qkvOp) DiffWRT(int) []bool { return []bool{true, true, true} }

// SymDiff returns the gradient nodes of q, k and v.
func (op *qkvOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 3 {
		return nil, fmt.Errorf("attention: OpQKV: SymDiff with %d inputs: %w", len(inputs), ErrShape)
	}
	main := &qkvGradOp{fwd: op}
	dq, err := G.ApplyOp(main, inputs[0], inputs[1], inputs[2], output, grad)
	if err != nil {
		return nil, fmt.Errorf("attention: OpQKV gradient: %w", err)
	}
	out := G.Nodes{dq}
	for which := 1; which <= 2; which++ {
		n, err := G.ApplyOp(&qkvFetchOp{src: main, which: which}, dq)
		if err != nil {
			return nil, fmt.Errorf("attention: OpQKV gradient: %w", err)
		}
		out = append(out, n)
	}
	return out, nil
}

// qkvGradOp is the fused backward op of OpQKV: (q, k, v, out, dOut) → dq,
// keeping dk and dv for the two qkvFetchOp nodes that read them.
type qkvGradOp struct {
	nn.OpDefaults
	fwd        *qkvOp
	dq, dk, dv nn.OutBuf
}

func (op *qkvGradOp) Arity() int { return 5 }

func (op *qkvGradOp) Type() hm.Type {
	return hm.NewFnType(rank4Type, rank4Type, rank4Type, rank4Type, rank4Type, rank4Type)
}

func (op *qkvGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.fwd.InferShape()
}

// Do computes all three gradients and returns dq.
func (op *qkvGradOp) Do(in ...G.Value) (G.Value, error) {
	f := op.fwd
	o := &f.opts
	if len(in) != 5 {
		return nil, fmt.Errorf("attention: OpQKV gradient: %d inputs, want 5: %w", len(in), ErrShape)
	}
	q, k, v, err := f.views("OpQKV gradient", in[:3])
	if err != nil {
		return nil, err
	}
	var outs [2]Tensor
	for i, what := range []string{"output", "output gradient"} {
		data, err := f32s("OpQKV gradient", what, in[3+i], o.B*o.H*o.T*f.d)
		if err != nil {
			return nil, err
		}
		if outs[i], err = Contiguous(data, o.B, o.H, o.T, f.d); err != nil {
			return nil, err
		}
	}
	tq := op.dq.GetShape(o.B, o.H, o.T, f.d)
	tk := op.dk.GetShape(o.B, o.KVH, o.T, f.d)
	tv := op.dv.GetShape(o.B, o.KVH, o.T, f.d)
	dq, _ := Contiguous(tq.Float32s(), o.B, o.H, o.T, f.d)
	dk, _ := Contiguous(tk.Float32s(), o.B, o.KVH, o.T, f.d)
	dv, _ := Contiguous(tv.Float32s(), o.B, o.KVH, o.T, f.d)
	if o.Impl == Naive {
		err = NaiveBackwardInto(dq, dk, dv, q, k, v, outs[0], nil, outs[1], o.kernelOptions())
	} else if len(f.lse) != o.B*o.H*o.T {
		err = fmt.Errorf("attention: OpQKV gradient ran before its forward op: %w", ErrShape)
	} else {
		err = BackwardInto(dq, dk, dv, q, k, v, outs[0], f.lse, outs[1], o.kernelOptions())
	}
	if err != nil {
		return nil, err
	}
	return tq, nil
}

func (op *qkvGradOp) WriteHash(h hash.Hash) { op.fwd.opts.writeHash(h, "QKVGrad", op.fwd.d) }
func (op *qkvGradOp) Hashcode() uint32      { return nn.OpHash(op) }
func (op *qkvGradOp) String() string        { return "∂q " + op.fwd.String() }

// qkvFetchOp returns dk (which = 1) or dv (which = 2) computed by src. Its
// input is src's node, so the tape runs it after src.
type qkvFetchOp struct {
	nn.OpDefaults
	src   *qkvGradOp
	which int
}

func (op *qkvFetchOp) Arity() int    { return 1 }
func (op *qkvFetchOp) Type() hm.Type { return hm.NewFnType(rank4Type, rank4Type) }
func (op *qkvFetchOp) buf() *nn.OutBuf {
	if op.which == 1 {
		return &op.src.dk
	}
	return &op.src.dv
}

func (op *qkvFetchOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	o := &op.src.fwd.opts
	return tensor.Shape{o.B, o.KVH, o.T, op.src.fwd.d}, nil
}

// Do returns the gradient that the fused backward op left.
func (op *qkvFetchOp) Do(in ...G.Value) (G.Value, error) {
	o := &op.src.fwd.opts
	b := op.buf()
	if !b.Used() {
		return nil, fmt.Errorf("attention: OpQKV gradient read before it was computed: %w", ErrShape)
	}
	return b.GetShape(o.B, o.KVH, o.T, op.src.fwd.d), nil
}

func (op *qkvFetchOp) WriteHash(h hash.Hash) {
	op.src.fwd.opts.writeHash(h, fmt.Sprintf("QKVGrad%d", op.which), op.src.fwd.d)
}
func (op *qkvFetchOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *qkvFetchOp) String() string {
	return fmt.Sprintf("∂%c %v", "qkv"[op.which], op.src.fwd)
}
