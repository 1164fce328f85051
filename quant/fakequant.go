package quant

import (
	"fmt"
	"hash"
	"math"
	"sync/atomic"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// FakeQuantOptions configures the fake-quant op.
type FakeQuantOptions struct {
	// PerChannel gives each column of the [rows, cols] input its own scale:
	// the output channels of a weight stored [in, out]. Otherwise one scale
	// covers the whole tensor (activations).
	PerChannel bool
	// LSQ takes the scale from the op's second input (a learned parameter
	// of cols values, or 1 per tensor) and gives it the LSQ gradient.
	// Without LSQ a per-channel scale is max|column|/127 of the current
	// input (nothing clips), and a per-tensor scale comes from Observer.
	LSQ bool
	// Observer provides the per-tensor scale without LSQ. While Observe is
	// set (see FakeQuantState) each forward run shows it the input first.
	Observer Observer
	// State, if not nil, controls observation and records the scales of the
	// last forward run.
	State *FakeQuantState
}

// FakeQuantState is shared between a fake-quant op and its owner.
type FakeQuantState struct {
	// Observe lets the op update its Observer on each forward run
	// (training); clear it to freeze the scale.
	Observe atomic.Bool
	// scales of the last forward run
	scales atomic.Pointer[[]float32]
}

// Scales returns the scales used by the last forward run (nil before any).
func (s *FakeQuantState) Scales() []float32 {
	if p := s.scales.Load(); p != nil {
		return *p
	}
	return nil
}

var (
	fqMatrix = nn.MatrixType()
	fqVector = nn.VectorType()
)

// fakeQuantOp computes y = clamp(round(x/s), −127, 127)·s.
type fakeQuantOp struct {
	nn.OpBase
	rows, cols int
	opts       FakeQuantOptions
	scale      []float32 // scales of the last run (cols or 1), read by the gradients
	out        nn.OutBuf
}

// FakeQuant adds a fake-quantization node to x's graph: forward
// quantize–dequantize, backward straight-through (the upstream gradient
// passes where the input is inside the representable range and is zero where
// it was clipped, i.e. |x/s| ≥ 127.5) and, with opts.LSQ, the LSQ gradient for
// the scale input s (−x/s + round(x/s) inside the range, −127 or 127 where
// clipped, times
// 1/√(N·127) with N the number of values sharing the scale). x is 2-D
// [rows, cols]; s (only with LSQ) is [cols] per channel or [1] per tensor.
func FakeQuant(x, s *G.Node, opts FakeQuantOptions) (*G.Node, error) {
	if x == nil || x.Dtype() != tensor.Float32 || len(x.Shape()) != 2 {
		return nil, fmt.Errorf("quant: FakeQuant: x must be a 2-D float32 node: %w", ErrInput)
	}
	rows, cols := x.Shape()[0], x.Shape()[1]
	op := &fakeQuantOp{OpBase: nn.NewOpBase(), rows: rows, cols: cols, opts: opts}
	if opts.LSQ {
		want := 1
		if opts.PerChannel {
			want = cols
		}
		if s == nil || s.Dtype() != tensor.Float32 || len(s.Shape()) != 1 || s.Shape()[0] != want {
			return nil, fmt.Errorf("quant: FakeQuant: LSQ needs a float32 scale of %d values: %w", want, ErrInput)
		}
		n, err := G.ApplyOp(op, x, s)
		if err != nil {
			return nil, fmt.Errorf("quant: FakeQuant: %w", err)
		}
		return n, nil
	}
	if !opts.PerChannel && opts.Observer == nil {
		return nil, fmt.Errorf("quant: FakeQuant: a per-tensor scale needs LSQ or an observer: %w", ErrInput)
	}
	n, err := G.ApplyOp(op, x)
	if err != nil {
		return nil, fmt.Errorf("quant: FakeQuant: %w", err)
	}
	return n, nil
}

func (op *fakeQuantOp) Arity() int {
	if op.opts.LSQ {
		return 2
	}
	return 1
}

func (op *fakeQuantOp) Type() hm.Type {
	if op.opts.LSQ {
		return hm.NewFnType(fqMatrix, fqVector, fqMatrix)
	}
	return hm.NewFnType(fqMatrix, fqMatrix)
}

func (op *fakeQuantOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.cols}, nil
}

func (op *fakeQuantOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "quant.FakeQuant#%d(%d×%d, perChannel=%t, lsq=%t)", op.Serial(), op.rows, op.cols, op.opts.PerChannel, op.opts.LSQ)
}

func (op *fakeQuantOp) Hashcode() uint32 { return nn.OpHash(op) }

func (op *fakeQuantOp) String() string {
	return fmt.Sprintf("quant.FakeQuant(perChannel=%t, lsq=%t)", op.opts.PerChannel, op.opts.LSQ)
}

// positive keeps a learned scale usable: LSQ scales that an optimizer pushed
// to zero or below are replaced by a tiny positive value.
func positive(s float32) float32 {
	if !(s > 1e-12) {
		return 1e-12
	}
	return s
}

func (op *fakeQuantOp) Do(in ...G.Value) (G.Value, error) {
	if len(in) != op.Arity() {
		return nil, fmt.Errorf("quant: FakeQuant: %d inputs: %w", len(in), ErrInput)
	}
	x, err := nn.Float32s("quant", "FakeQuant", "x", in[0], op.rows*op.cols, ErrInput)
	if err != nil {
		return nil, err
	}
	ns := 1
	if op.opts.PerChannel {
		ns = op.cols
	}
	scale := make([]float32, ns)
	switch {
	case op.opts.LSQ:
		s, err := nn.Float32s("quant", "FakeQuant", "scale", in[1], ns, ErrInput)
		if err != nil {
			return nil, err
		}
		for i, v := range s {
			scale[i] = positive(v)
		}
	case op.opts.PerChannel:
		amax := make([]float32, op.cols)
		for r := 0; r < op.rows; r++ {
			for c, v := range x[r*op.cols : (r+1)*op.cols] {
				amax[c] = max(amax[c], float32(math.Abs(float64(v))))
			}
		}
		for c := range scale {
			scale[c] = ScaleFor(amax[c])
		}
	default:
		if op.opts.State == nil || op.opts.State.Observe.Load() {
			op.opts.Observer.Observe(x)
		}
		scale[0] = op.opts.Observer.Scale()
	}
	op.scale = scale
	if op.opts.State != nil {
		op.opts.State.scales.Store(&scale)
	}
	t := op.out.Get(op.rows, op.cols)
	out := t.Float32s()
	for r := 0; r < op.rows; r++ {
		for c, v := range x[r*op.cols : (r+1)*op.cols] {
			s := scale[0]
			if op.opts.PerChannel {
				s = scale[c]
			}
			out[r*op.cols+c] = QuantDequant(v, s)
		}
	}
	return t, nil
}

func (op *fakeQuantOp) DiffWRT(n int) []bool {
	return nn.AllDiff(n)
}

// SymDiff returns the straight-through gradient of x and, with LSQ, the
// scale's gradient. Both read the scales saved by the forward run, which is
// an input so the tape orders them after it.
func (op *fakeQuantOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	x := inputs[0]
	dx, err := G.ApplyOp(&fqGradOp{fwd: op, OpBase: nn.NewOpBase(), target: x, wrtScale: false}, x, grad, output)
	if err != nil {
		return nil, fmt.Errorf("quant: FakeQuant gradient: %w", err)
	}
	if !op.opts.LSQ {
		return G.Nodes{dx}, nil
	}
	ds, err := G.ApplyOp(&fqGradOp{fwd: op, OpBase: nn.NewOpBase(), target: inputs[1], wrtScale: true}, x, grad, output)
	if err != nil {
		return nil, fmt.Errorf("quant: FakeQuant gradient: %w", err)
	}
	return G.Nodes{dx, ds}, nil
}

// fqGradOp computes one gradient of a fake-quant op: of x (straight-through
// with the clipping mask) or of the LSQ scale.
type fqGradOp struct {
	nn.OpBase
	fwd      *fakeQuantOp
	target   *G.Node
	wrtScale bool
}

func (g *fqGradOp) Arity() int { return 3 }

func (g *fqGradOp) Type() hm.Type {
	if g.wrtScale {
		return hm.NewFnType(fqMatrix, fqMatrix, fqMatrix, fqVector)
	}
	return hm.NewFnType(fqMatrix, fqMatrix, fqMatrix, fqMatrix)
}

func (g *fqGradOp) shape() tensor.Shape {
	if !g.wrtScale {
		return tensor.Shape{g.fwd.rows, g.fwd.cols}
	}
	if g.fwd.opts.PerChannel {
		return tensor.Shape{g.fwd.cols}
	}
	return tensor.Shape{1}
}

func (g *fqGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return g.shape(), nil }

func (g *fqGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "quant.FakeQuantGrad#%d(fwd#%d, scale=%t)", g.Serial(), g.fwd.Serial(), g.wrtScale)
}

func (g *fqGradOp) Hashcode() uint32 { return nn.OpHash(g) }

func (g *fqGradOp) String() string {
	return fmt.Sprintf("quant.FakeQuantGrad(fwd#%d, scale=%t)", g.fwd.Serial(), g.wrtScale)
}

func (g *fqGradOp) Do(in ...G.Value) (G.Value, error) {
	op := g.fwd
	if g.target.Deriv() == nil {
		// Frozen input: nothing reads this gradient.
		return tensor.New(tensor.WithShape(g.shape()...), tensor.Of(tensor.Float32)), nil
	}
	if len(in) != 3 {
		return nil, fmt.Errorf("quant: FakeQuantGrad: %d inputs: %w", len(in), ErrInput)
	}
	x, err := nn.Float32s("quant", "FakeQuantGrad", "x", in[0], op.rows*op.cols, ErrInput)
	if err != nil {
		return nil, err
	}
	dy, err := nn.Float32s("quant", "FakeQuantGrad", "gradient", in[1], op.rows*op.cols, ErrInput)
	if err != nil {
		return nil, err
	}
	scale := op.scale
	if len(scale) == 0 {
		return nil, fmt.Errorf("quant: FakeQuantGrad before its forward run: %w", ErrInput)
	}
	n := g.shape().TotalSize()
	out := make([]float32, n)
	if !g.wrtScale {
		for r := 0; r < op.rows; r++ {
			for c, v := range x[r*op.cols : (r+1)*op.cols] {
				s := scale[0]
				if op.opts.PerChannel {
					s = scale[c]
				}
				if !clipped(float64(v) / float64(s)) {
					out[r*op.cols+c] = dy[r*op.cols+c]
				}
			}
		}
	} else {
		acc := make([]float64, n)
		for r := 0; r < op.rows; r++ {
			for c, v := range x[r*op.cols : (r+1)*op.cols] {
				k := 0
				if op.opts.PerChannel {
					k = c
				}
				f := float64(v) / float64(scale[k])
				var d float64
				switch {
				case clipped(f) && f < 0:
					d = -QMax
				case clipped(f):
					d = QMax
				default:
					d = float64(Round(v, scale[k])) - f
				}
				acc[k] += d * float64(dy[r*op.cols+c])
			}
		}
		per := op.rows * op.cols
		if op.opts.PerChannel {
			per = op.rows
		}
		gs := 1 / math.Sqrt(float64(per)*QMax)
		for k := range out {
			out[k] = float32(acc[k] * gs)
		}
	}
	return tensor.New(tensor.WithShape(g.shape()...), tensor.WithBacking(out)), nil
}

// clipped reports whether x/s = f lies outside the range, i.e. round(f) is
// beyond ±127 (as PyTorch's fake-quant mask): |f| ≥ 127.5.
func clipped(f float64) bool { return !(math.Abs(f) < QMax+0.5) }
