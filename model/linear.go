package model

import (
	"fmt"

	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
)

// Linear is one of the model's linear layers. The model calls it twice: to
// add the layer to a training graph and to run it without a graph on the
// inference path. DenseLinear is the default; lora and quant provide
// adapted and quantized implementations and install them with SetLinear.
type Linear interface {
	// Dims returns the input and output widths.
	Dims() (in, out int)
	// BuildGraph adds y = f(x) to the graph of gc: x is [rows, in], y is
	// [rows, out]. The layer must not keep the graph's nodes after the
	// call: with gradient checkpointing (ReplicaOptions) blocks are built
	// in graphs that are dropped after each pass, with their buffers.
	BuildGraph(gc *GraphContext, x *G.Node) (*G.Node, error)
	// Forward computes y = f(x) for rows rows without a graph; y has
	// rows·out elements and x rows·in.
	Forward(y, x []float32, rows int) error
}

// DenseLinear is y = x·W + b with W stored [in, out] (Hugging Face GPT-2's
// Conv1D layout) and an optional bias.
type DenseLinear struct {
	Weight *Param // [in, out]
	Bias   *Param // may be nil
}

// Dims returns the input and output widths.
func (l *DenseLinear) Dims() (in, out int) { return l.Weight.Shape[0], l.Weight.Shape[1] }

// BuildGraph adds the layer as one fused op.
func (l *DenseLinear) BuildGraph(gc *GraphContext, x *G.Node) (*G.Node, error) {
	var b *G.Node
	if l.Bias != nil {
		b = gc.Node(l.Bias)
	}
	return nn.Linear(x, gc.Node(l.Weight), b, nn.LinearOpts{BF16: gc.precision == PrecisionBF16})
}

// Forward computes the layer on the kernels.
func (l *DenseLinear) Forward(y, x []float32, rows int) error {
	in, out := l.Dims()
	if len(x) != rows*in || len(y) != rows*out {
		return fmt.Errorf("model: linear %d→%d: %d inputs and %d outputs for %d rows", in, out, len(x), len(y), rows)
	}
	var b []float32
	if l.Bias != nil {
		b = l.Bias.Data
	}
	return nn.LinearForward(y, x, l.Weight.Data, b, rows, in, out)
}
