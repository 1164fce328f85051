package lora

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
	"github.com/galleon-ml/galleon/model"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// fusedOp is an adapted frozen bf16 layer as one op of inputs x, A and B:
//
//	y = base(x) + scale·(x∘m)·Aᵀ·Bᵀ
//
// with the down-projection's dropout mask m drawn as downOp draws it. The
// pair downOp + upAddOp computes the same, but gives x two consumers (the
// base op and the down-projection), so gorgonia sums two rows×in input
// gradients with its single-threaded Add, after the adapter's has been
// written out in full. Here the input gradient is one node: the base's
// dy·Wᵀ, onto which the adapter's (dh·A)∘m is added in the same pass that
// computes it (kernels.LowRankExpand). Layer uses it for model.BF16Linear
// bases when the low-rank products run (lowRank); hᵀ = A·(x∘m)ᵀ, [r, rows],
// stays on the op between the forward run and the backward of the same run,
// as the mask does.
type fusedOp struct {
	nn.OpDefaults
	down  downOp // the down-projection's sizes, dropout and mask
	base  *model.BF16Linear
	out   int
	scale float32
	ht    []float32 // hᵀ of the last forward run
	y     nn.OutBuf
}

func newFused(base *model.BF16Linear, x, a, b *G.Node, scale float32, p float64, src *nn.DropoutSource, stream uint64) (*G.Node, error) {
	xs, as, bs := x.Shape(), a.Shape(), b.Shape()
	in, out := base.Dims()
	if len(xs) != 2 || len(as) != 2 || len(bs) != 2 || xs[1] != in || as[1] != in || bs[0] != out || bs[1] != as[0] {
		return nil, fmt.Errorf("lora: adapted layer %d→%d: x %v, A %v and B %v do not fit", in, out, xs, as, bs)
	}
	op := &fusedOp{
		down:  downOp{OpBase: nn.NewOpBase(), rows: xs[0], in: in, r: as[0], p: p, src: src, stream: stream},
		base:  base,
		out:   out,
		scale: scale,
	}
	n, err := G.ApplyOp(op, x, a, b)
	if err != nil {
		return nil, fmt.Errorf("lora: adapted layer: %w", err)
	}
	return n, nil
}

func (op *fusedOp) Arity() int { return 3 }
func (op *fusedOp) Type() hm.Type {
	return hm.NewFnType(matrixType, matrixType, matrixType, matrixType)
}
func (op *fusedOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.down.rows, op.out}, nil
}
func (op *fusedOp) WriteHash(h hash.Hash) {
	d := &op.down
	fmt.Fprintf(h, "lora.Fused#%d(rows=%d, in=%d, out=%d, r=%d, scale=%v, p=%v, stream=%d)", d.Serial(), d.rows, d.in, op.out, d.r, op.scale, d.p, d.stream)
}
func (op *fusedOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *fusedOp) String() string {
	return fmt.Sprintf("lora.Fused(%d→%d, r=%d, scale=%v, dropout=%v)", op.down.in, op.out, op.down.r, op.scale, op.down.p)
}

func (op *fusedOp) Do(in ...G.Value) (G.Value, error) {
	d := &op.down
	if len(in) != 3 {
		return nil, fmt.Errorf("lora: adapted layer: %d inputs, want 3", len(in))
	}
	x, err := nn.Float32s("lora", "adapted layer", "x", in[0], d.rows*d.in, nn.ErrShape)
	if err != nil {
		return nil, err
	}
	a, err := nn.Float32s("lora", "adapted layer", "lora_A", in[1], d.r*d.in, nn.ErrShape)
	if err != nil {
		return nil, err
	}
	b, err := nn.Float32s("lora", "adapted layer", "lora_B", in[2], op.out*d.r, nn.ErrShape)
	if err != nil {
		return nil, err
	}
	if d.p > 0 {
		if err := d.fillMask(); err != nil {
			return nil, fmt.Errorf("lora: adapter dropout: %w", err)
		}
	}
	if len(op.ht) != d.r*d.rows {
		op.ht = make([]float32, d.r*d.rows)
	}
	mask, keep := d.maskBits()
	kernels.LowRankDot(d.r, d.rows, d.in, keep, a, d.in, x, d.in, mask, 0, op.ht, d.rows)
	t := op.y.Get(d.rows, op.out)
	y := t.Float32s()
	if err := op.base.Forward(y, x, d.rows); err != nil {
		return nil, fmt.Errorf("lora: adapted layer: %w", err)
	}
	// y += scale·h·Bᵀ; with B = 0 this adds exact zeros.
	bt, put := transposed(b, op.out, d.r)
	defer put()
	kernels.LowRankExpand(d.r, d.rows, op.out, op.scale, op.ht, d.rows, bt, op.out, true, y, op.out, nil, 0)
	return t, nil
}

func (op *fusedOp) DiffWRT(int) []bool { return []bool{true, true, true} }

// SymDiff: dhᵀ = scale·Bᵀ·dyᵀ (a node, read by the gradients of x and A),
// dx = dy·Wᵀ + (dh·A)∘m, dA = dhᵀ·(x∘m) and dB = scale·dyᵀ·h, the last
// three reading the mask or hᵀ of the forward run (the forward node is an
// input, so the tape orders them after it).
func (op *fusedOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 3 {
		return nil, fmt.Errorf("lora: adapted layer: %d inputs, want 3", len(inputs))
	}
	d := &op.down
	rows, in, out, r, s := d.rows, d.in, op.out, d.r, op.scale
	dh, err := newGrad(d.Serial(), "FusedGradH", inputs[1], r, rows, func(dst []float32, vals []G.Value) error {
		dy, err := nn.Float32s("lora", "FusedGradH", "dy", vals[0], rows*out, nn.ErrShape)
		if err != nil {
			return err
		}
		b, err := nn.Float32s("lora", "FusedGradH", "lora_B", vals[1], out*r, nn.ErrShape)
		if err != nil {
			return err
		}
		bt, put := transposed(b, out, r)
		defer put()
		kernels.LowRankDot(r, rows, out, s, bt, out, dy, out, nil, 0, dst, rows)
		return nil
	}, grad, inputs[2])
	if err != nil {
		return nil, err
	}
	dx, err := newGrad(d.Serial(), "FusedGradX", inputs[0], rows, in, func(dst []float32, vals []G.Value) error {
		dy, err := nn.Float32s("lora", "FusedGradX", "dy", vals[0], rows*out, nn.ErrShape)
		if err != nil {
			return err
		}
		dht, err := nn.Float32s("lora", "FusedGradX", "dh", vals[1], r*rows, nn.ErrShape)
		if err != nil {
			return err
		}
		a, err := nn.Float32s("lora", "FusedGradX", "lora_A", vals[2], r*in, nn.ErrShape)
		if err != nil {
			return err
		}
		if err := op.base.BackwardInput(dst, dy, rows); err != nil {
			return fmt.Errorf("lora: adapted layer: %w", err)
		}
		mask, keep := d.maskBits()
		kernels.LowRankExpand(r, rows, in, keep, dht, rows, a, in, true, dst, in, mask, 0)
		return nil
	}, grad, dh, inputs[1], output)
	if err != nil {
		return nil, err
	}
	da, err := newGrad(d.Serial(), "FusedGradA", inputs[1], r, in, func(dst []float32, vals []G.Value) error {
		dht, err := nn.Float32s("lora", "FusedGradA", "dh", vals[0], r*rows, nn.ErrShape)
		if err != nil {
			return err
		}
		x, err := nn.Float32s("lora", "FusedGradA", "x", vals[1], rows*in, nn.ErrShape)
		if err != nil {
			return err
		}
		mask, keep := d.maskBits()
		kernels.LowRankOuter(r, rows, in, keep, dht, rows, x, in, mask, 0, dst, in)
		return nil
	}, dh, inputs[0], output)
	if err != nil {
		return nil, err
	}
	db, err := newGrad(d.Serial(), "FusedGradB", inputs[2], out, r, func(dst []float32, vals []G.Value) error {
		dy, err := nn.Float32s("lora", "FusedGradB", "dy", vals[0], rows*out, nn.ErrShape)
		if err != nil {
			return err
		}
		if len(op.ht) != r*rows {
			return fmt.Errorf("lora: adapted layer: gradient of B before a forward run")
		}
		sp := blockPool.Get().(*[]float32)
		defer blockPool.Put(sp)
		if cap(*sp) < r*out {
			*sp = make([]float32, r*out)
		}
		dbt := (*sp)[:r*out]
		kernels.LowRankOuter(r, rows, out, s, op.ht, rows, dy, out, nil, 0, dbt, out)
		transposeInto(dst, dbt, r, out)
		return nil
	}, grad, output)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, da, db}, nil
}
