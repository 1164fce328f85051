package model

import (
	"fmt"
	"hash"
	"sync/atomic"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BF16Linear is a frozen linear layer whose weight stays in bfloat16, as
// Hugging Face checkpoints of the Llama family ship it: y = x·W + b with
// half the memory of a DenseLinear. Both the forward product and, in a
// training graph, the input gradient dx = dy·Wᵀ run on the bf16 GEMM
// (kernels.GemmBF16), which rounds x (dy) to bfloat16 as it packs it and
// accumulates in float32; the weight and bias get no gradient, so the layer
// suits inference, generation and adapters (LoRA) over a frozen base.
// LoadPretrained with KeepBF16 installs these layers.
type BF16Linear struct {
	// Weight holds In·Out bfloat16s in the layout of the file it came
	// from: [Out, In] (torch.nn.Linear, the Llama family) when OutIn is
	// set, [In, Out] (GPT-2's Conv1D) otherwise.
	Weight []uint16
	In     int       // input width
	Out    int       // output width
	OutIn  bool      // Weight is [Out, In] rather than [In, Out]
	Bias   []float32 // Out values, or nil
	id     uint64
}

var bf16LinearIDs atomic.Uint64

// NewBF16Linear returns a layer over weight (see BF16Linear for its
// layout) and an optional bias, or an error if their sizes do not match.
func NewBF16Linear(weight []uint16, in, out int, outIn bool, bias []float32) (*BF16Linear, error) {
	if in <= 0 || out <= 0 || len(weight) != in*out || (bias != nil && len(bias) != out) {
		return nil, fmt.Errorf("model: bf16 linear %d→%d: weight of %d and bias of %d values", in, out, len(weight), len(bias))
	}
	return &BF16Linear{Weight: weight, In: in, Out: out, OutIn: outIn, Bias: bias, id: bf16LinearIDs.Add(1)}, nil
}

// Dims returns the input and output widths.
func (l *BF16Linear) Dims() (in, out int) { return l.In, l.Out }

// OwnsWeights reports true: the layer reads none of the model's float32
// parameters, so Model.ReleaseReplaced frees them.
func (l *BF16Linear) OwnsWeights() bool { return true }

// forward computes y = x·W + b; the arguments are not checked.
func (l *BF16Linear) forward(y, x []float32, rows int) {
	nn.LinearForwardBF16(y, x, l.Weight, l.Bias, rows, l.In, l.Out, l.OutIn)
}

// backwardInput computes dx = dy·Wᵀ; the arguments are not checked.
func (l *BF16Linear) backwardInput(dx, dy []float32, rows int) {
	nn.LinearBackwardXBF16(dx, dy, l.Weight, rows, l.In, l.Out, l.OutIn)
}

// Forward computes y = x·W + b for rows rows on the bf16 GEMM.
func (l *BF16Linear) Forward(y, x []float32, rows int) error {
	if rows < 0 || len(x) != rows*l.In || len(y) != rows*l.Out {
		return fmt.Errorf("model: bf16 linear %d→%d: %d inputs and %d outputs for %d rows", l.In, l.Out, len(x), len(y), rows)
	}
	l.forward(y, x, rows)
	return nil
}

// BackwardInput computes the input gradient dx = dy·Wᵀ for rows rows on
// the bf16 GEMM, as the layer's graph op does: for ops that fuse the frozen
// layer with more work on the same input (lora's adapted layer).
func (l *BF16Linear) BackwardInput(dx, dy []float32, rows int) error {
	if rows < 0 || len(dx) != rows*l.In || len(dy) != rows*l.Out {
		return fmt.Errorf("model: bf16 linear %d→%d: %d input and %d output gradients for %d rows", l.In, l.Out, len(dx), len(dy), rows)
	}
	l.backwardInput(dx, dy, rows)
	return nil
}

// BuildGraph adds the layer as one frozen op whose only gradient is the
// input's.
func (l *BF16Linear) BuildGraph(gc *GraphContext, x *G.Node) (*G.Node, error) {
	if x == nil || x.Dtype() != tensor.Float32 || len(x.Shape()) != 2 || x.Shape()[1] != l.In {
		var s tensor.Shape
		if x != nil {
			s = x.Shape()
		}
		return nil, fmt.Errorf("model: bf16 linear: x must be a float32 [rows, %d] node, got %v", l.In, s)
	}
	op := &bf16LinearOp{OpBase: nn.NewOpBase(), l: l, rows: x.Shape()[0]}
	y, err := G.ApplyOp(op, x)
	if err != nil {
		return nil, fmt.Errorf("model: bf16 linear: %w", err)
	}
	return y, nil
}

var bf16Matrix = nn.MatrixType()

// bf16LinearOp is y = x·W + b for a frozen bf16 layer; its one input is x.
type bf16LinearOp struct {
	nn.OpBase
	nn.OpDefaults
	l    *BF16Linear
	rows int
	out  nn.OutBuf
}

func (op *bf16LinearOp) Arity() int    { return 1 }
func (op *bf16LinearOp) Type() hm.Type { return hm.NewFnType(bf16Matrix, bf16Matrix) }
func (op *bf16LinearOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.l.Out}, nil
}
func (op *bf16LinearOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "model.BF16Linear#%d(layer=%d, rows=%d, in=%d, out=%d)", op.Serial(), op.l.id, op.rows, op.l.In, op.l.Out)
}
func (op *bf16LinearOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *bf16LinearOp) String() string {
	return fmt.Sprintf("model.BF16Linear(%d→%d)", op.l.In, op.l.Out)
}

func (op *bf16LinearOp) compute(dst []float32, in []G.Value) error {
	if len(in) != 1 {
		return fmt.Errorf("model: BF16Linear: %d inputs, want 1", len(in))
	}
	x, err := nn.Float32s("model", "BF16Linear", "x", in[0], op.rows*op.l.In, ErrData)
	if err != nil {
		return err
	}
	op.l.forward(dst, x, op.rows)
	return nil
}

// Do computes y into the op's own buffer.
func (op *bf16LinearOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.l.Out, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo computes y into prealloc.
func (op *bf16LinearOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return nn.PreallocDo("model", "BF16Linear", prealloc, op.rows*op.l.Out, ErrData, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *bf16LinearOp) DiffWRT(int) []bool { return []bool{true} }

// SymDiff returns dx = dy·Wᵀ, computed by an op that reads only dy.
func (op *bf16LinearOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, fmt.Errorf("model: BF16Linear.SymDiff: %d inputs, want 1", len(inputs))
	}
	g := &bf16LinearGradOp{OpBase: nn.NewOpBase(), l: op.l, rows: op.rows, target: inputs[0]}
	dx, err := G.ApplyOp(g, grad)
	if err != nil {
		return nil, fmt.Errorf("model: BF16Linear gradient: %w", err)
	}
	return G.Nodes{dx}, nil
}

// bf16LinearGradOp computes dx = dy·Wᵀ. It returns a 1×1 placeholder
// without any work when x has no derivative node (nothing trainable lies
// before the layer), as the backward ops of internal/nn do.
type bf16LinearGradOp struct {
	nn.OpBase
	nn.OpDefaults
	l       *BF16Linear
	rows    int
	target  *G.Node
	out, ph nn.OutBuf
}

func (op *bf16LinearGradOp) Arity() int    { return 1 }
func (op *bf16LinearGradOp) Type() hm.Type { return hm.NewFnType(bf16Matrix, bf16Matrix) }
func (op *bf16LinearGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.l.In}, nil
}
func (op *bf16LinearGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "model.BF16LinearGradX#%d(layer=%d, rows=%d, in=%d, out=%d)", op.Serial(), op.l.id, op.rows, op.l.In, op.l.Out)
}
func (op *bf16LinearGradOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *bf16LinearGradOp) String() string {
	return fmt.Sprintf("model.BF16LinearGradX(%d→%d)", op.l.In, op.l.Out)
}

func (op *bf16LinearGradOp) Do(in ...G.Value) (G.Value, error) {
	if len(in) != 1 {
		return nil, fmt.Errorf("model: BF16LinearGradX: %d inputs, want 1", len(in))
	}
	if op.target.Deriv() == nil {
		return op.ph.Get(1, 1), nil
	}
	dy, err := nn.Float32s("model", "BF16LinearGradX", "dy", in[0], op.rows*op.l.Out, ErrData)
	if err != nil {
		return nil, err
	}
	t := op.out.Get(op.rows, op.l.In)
	op.l.backwardInput(t.Float32s(), dy, op.rows)
	return t, nil
}
