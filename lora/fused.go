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

// fusedOp is an adapted frozen layer as one op of inputs x, A, B and the
// base's own (none for a bf16 layer, W and b for a float32 one):
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
// bases and frozen float32 model.DenseLinear ones when the low-rank products
// run (lowRank); hᵀ = A·(x∘m)ᵀ, [r, rows],
// stays on the op between the forward run and the backward of the same run,
// as the mask does.
type fusedOp struct {
	nn.OpDefaults
	down  downOp // the down-projection's sizes, dropout and mask
	base  frozenBase
	extra int // the base's inputs, after x, A and B
	types []hm.Type
	out   int
	scale float32
	ht    []float32 // hᵀ of the last forward run
	y     nn.OutBuf
}

// frozenBase is the base layer of a fusedOp: its forward product and input
// gradient, given the values of its own inputs (the fusedOp's inputs after
// x, A and B).
type frozenBase interface {
	Dims() (in, out int)
	forward(y, x []float32, rows int, own []G.Value) error
	backwardInput(dx, dy []float32, rows int, own []G.Value) error
}

// bf16Base is a model.BF16Linear, whose weights are its own, not inputs.
type bf16Base struct{ *model.BF16Linear }

func (b bf16Base) forward(y, x []float32, rows int, _ []G.Value) error {
	return b.Forward(y, x, rows)
}

func (b bf16Base) backwardInput(dx, dy []float32, rows int, _ []G.Value) error {
	return b.BackwardInput(dx, dy, rows)
}

// denseBase is a frozen model.DenseLinear: y = x·W + b with W [in, out]
// and b (when present) the op's inputs.
type denseBase struct {
	in, out int
	bias    bool
}

func (d denseBase) Dims() (in, out int) { return d.in, d.out }

func (d denseBase) weights(own []G.Value) (w, b []float32, err error) {
	if w, err = nn.Float32s("lora", "adapted layer", "base weight", own[0], d.in*d.out, nn.ErrShape); err != nil {
		return nil, nil, err
	}
	if d.bias {
		if b, err = nn.Float32s("lora", "adapted layer", "base bias", own[1], d.out, nn.ErrShape); err != nil {
			return nil, nil, err
		}
	}
	return w, b, nil
}

func (d denseBase) forward(y, x []float32, rows int, own []G.Value) error {
	w, b, err := d.weights(own)
	if err != nil {
		return err
	}
	return nn.LinearForward(y, x, w, b, rows, d.in, d.out)
}

func (d denseBase) backwardInput(dx, dy []float32, rows int, own []G.Value) error {
	w, _, err := d.weights(own)
	if err != nil {
		return err
	}
	// dx = dy·Wᵀ, written (not added) into dx.
	kernels.Sgemm(false, true, rows, d.in, d.out, 1, dy, d.out, w, d.out, 0, dx, d.in)
	return nil
}

// newFused adds the fused op of base and the adapter (A, B) on x; own are
// the base's inputs (see frozenBase).
func newFused(base frozenBase, own []*G.Node, x, a, b *G.Node, scale float32, p float64, src *nn.DropoutSource, stream uint64) (*G.Node, error) {
	xs, as, bs := x.Shape(), a.Shape(), b.Shape()
	in, out := base.Dims()
	if len(xs) != 2 || len(as) != 2 || len(bs) != 2 || xs[1] != in || as[1] != in || bs[0] != out || bs[1] != as[0] {
		return nil, fmt.Errorf("lora: adapted layer %d→%d: x %v, A %v and B %v do not fit", in, out, xs, as, bs)
	}
	op := &fusedOp{
		down:  downOp{OpBase: nn.NewOpBase(), rows: xs[0], in: in, r: as[0], p: p, src: src, stream: stream},
		base:  base,
		extra: len(own),
		out:   out,
		scale: scale,
	}
	inputs := append(G.Nodes{x, a, b}, own...)
	for _, n := range inputs {
		op.types = append(op.types, n.Type())
	}
	op.types = append(op.types, matrixType)
	n, err := G.ApplyOp(op, inputs...)
	if err != nil {
		return nil, fmt.Errorf("lora: adapted layer: %w", err)
	}
	return n, nil
}

func (op *fusedOp) Arity() int    { return 3 + op.extra }
func (op *fusedOp) Type() hm.Type { return hm.NewFnType(op.types...) }
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
	if len(in) != op.Arity() {
		return nil, fmt.Errorf("lora: adapted layer: %d inputs, want %d", len(in), op.Arity())
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
	if err := op.base.forward(y, x, d.rows, in[3:]); err != nil {
		return nil, fmt.Errorf("lora: adapted layer: %w", err)
	}
	// y += scale·h·Bᵀ; with B = 0 this adds exact zeros.
	bt, put := transposed(b, op.out, d.r)
	defer put()
	kernels.LowRankExpand(d.r, d.rows, op.out, op.scale, op.ht, d.rows, bt, op.out, true, y, op.out, nil, 0)
	return t, nil
}

// DiffWRT: x, A and B; the base's inputs are frozen (Layer fuses only
// those).
func (op *fusedOp) DiffWRT(int) []bool {
	return append([]bool{true, true, true}, make([]bool, op.extra)...)
}

// SymDiff: dhᵀ = scale·Bᵀ·dyᵀ (a node, read by the gradients of x and A),
// dx = dy·Wᵀ + (dh·A)∘m, dA = dhᵀ·(x∘m) and dB = scale·dyᵀ·h, the last
// three reading the mask or hᵀ of the forward run (the forward node is an
// input, so the tape orders them after it).
func (op *fusedOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, fmt.Errorf("lora: adapted layer: %d inputs, want %d", len(inputs), op.Arity())
	}
	d := &op.down
	rows, in, out, r, s := d.rows, d.in, op.out, d.r, op.scale
	dh, err := upGradHNode(d.Serial(), "FusedGradH", inputs[1], inputs[2], grad, rows, out, r, s)
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
		if err := op.base.backwardInput(dst, dy, rows, vals[4:]); err != nil {
			return fmt.Errorf("lora: adapted layer: %w", err)
		}
		mask, keep := d.maskBits()
		kernels.LowRankExpand(r, rows, in, keep, dht, rows, a, in, true, dst, in, mask, 0)
		return nil
	}, append(G.Nodes{grad, dh, inputs[1], output}, inputs[3:]...)...)
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
		upGradB(dst, dy, op.ht, rows, out, r, s)
		return nil
	}, grad, output)
	if err != nil {
		return nil, err
	}
	return append(G.Nodes{dx, da, db}, make(G.Nodes, op.extra)...), nil
}
