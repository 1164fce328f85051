package quant

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/model"
	G "gorgonia.org/gorgonia"
)

// DefaultThreshold is LLM.int8()'s outlier threshold: input columns holding
// any |x| ≥ 6 are multiplied in float32. DefaultConfig and
// DefaultLinearOptions set it; a threshold of 0 disables the decomposition.
const DefaultThreshold = 6.0

// ActMode says how a Linear treats its input activations.
type ActMode int

const (
	// ActFloat keeps activations in float32 (weight-only int8, "W8"): up
	// to 8 rows (decoding) multiply straight from the int8 weight, more
	// rows in float32 on the weight dequantized a panel at a time, so no
	// float32 copy of the weight is ever held and W8's memory stays at a
	// byte per weight. The panels cost time on large products (about 1.4×
	// the float32 product at 128 rows), where ActDynamic's int8 GEMM is the
	// fast mode.
	ActFloat ActMode = iota
	// ActDynamic quantizes each input row (token) with its own scale
	// max|x_row|/127 at every call ("W8A8", LLM.int8()'s vector-wise
	// quantization).
	ActDynamic
	// ActStatic quantizes the whole input with one calibrated scale
	// (Linear.ActScale, from an Observer); larger values saturate.
	ActStatic
)

// String names the mode.
func (a ActMode) String() string {
	switch a {
	case ActFloat:
		return "float"
	case ActDynamic:
		return "dynamic"
	case ActStatic:
		return "static"
	}
	return fmt.Sprintf("ActMode(%d)", int(a))
}

// Linear is an int8 linear layer, y = x·Wᵀ + b with W [Out, In] int8 and one
// float32 scale per output channel; it implements model.Linear. With ActDynamic
// or ActStatic the product is an int8×int8→int32 GEMM with fused
// dequantization (row scale × channel scale) and bias; with Threshold > 0,
// input columns holding any |x| ≥ Threshold are taken out of the int8 product
// and multiplied in float32 with the dequantized weights (LLM.int8()).
//
// The fields may be read freely; after the first Forward they must not be
// changed (the packed weight is built once). Forward is safe for concurrent
// use.
//
// Memory per weight: Weight keeps the int8 values (1 byte each) for the
// whole life of the layer, because the outlier columns, the training graph
// (Int8Linear), Dequantize, WithDelta and Save read them. With ActFloat
// (W8) that is all. With ActDynamic or ActStatic the first Forward also
// packs the weight for the int8 GEMM's kernel (kernels.I8Kernel): the VNNI
// and sign-trick kernels pack int8 (1 more byte, plus 4 bytes per output
// channel for VNNI's column sums), so 2 bytes per weight in all; the AVX2
// W16 kernel, the default on AVX2 CPUs without AVX-512 VNNI, packs int16
// (2 more bytes), so 3 bytes per weight, still under float32's 4. PackedBytes
// reports the packed part.
type Linear struct {
	In, Out   int       // input and output widths
	Weight    *Rows     // [Out, In], one scale per output channel
	Bias      []float32 // Out values, or nil
	Act       ActMode   // how the input activations are treated
	ActScale  float32   // the static activation scale (ActStatic)
	Threshold float32   // outlier threshold; 0 disables the decomposition

	once    sync.Once
	initErr error
	packed  *kernels.I8PackedB
	scratch sync.Pool // *linearScratch
	id      uint64
}

var linearIDs atomic.Uint64

type linearScratch struct {
	pa     kernels.I8PackedA
	skip   []bool
	cols   []int
	xo, wo []float32
}

// LinearOptions configures NewLinear. Start from DefaultLinearOptions: the
// zero value keeps activations in float32 (ActFloat) and has no outlier
// threshold.
type LinearOptions struct {
	Act      ActMode // how the input activations are treated
	ActScale float32 // required (> 0) with ActStatic
	// Threshold is the outlier threshold (DefaultLinearOptions sets
	// DefaultThreshold, 6.0); 0 disables the decomposition.
	Threshold float32
}

// DefaultLinearOptions returns per-token dynamic activations (W8A8) with
// LLM.int8() outlier decomposition at DefaultThreshold; set Threshold to 0
// to disable it.
func DefaultLinearOptions() LinearOptions {
	return LinearOptions{Act: ActDynamic, Threshold: DefaultThreshold}
}

// NewLinear quantizes a float32 layer with weight w stored [in, out] (the
// model's layout) and bias b (out values, or nil) per output channel.
func NewLinear(w, b []float32, in, out int, opts LinearOptions) (*Linear, error) {
	if in <= 0 || out <= 0 || len(w) != in*out || (b != nil && len(b) != out) {
		return nil, fmt.Errorf("quant: NewLinear: weight of %d and bias of %d values for %d→%d: %w", len(w), len(b), in, out, ErrInput)
	}
	r, err := QuantizeColumns(w, in, out)
	if err != nil {
		return nil, err
	}
	return NewLinearFromRows(r, b, opts)
}

// NewLinearFromRows builds a Linear from an already quantized weight [out, in]
// (per output channel). The bias is copied.
func NewLinearFromRows(w *Rows, b []float32, opts LinearOptions) (*Linear, error) {
	if w == nil {
		return nil, fmt.Errorf("quant: NewLinearFromRows: nil weight: %w", ErrInput)
	}
	if err := w.validate(); err != nil {
		return nil, err
	}
	if w.Rows <= 0 || w.Cols <= 0 || w.Cols > kernels.MaxI8K || (b != nil && len(b) != w.Rows) {
		return nil, fmt.Errorf("quant: NewLinearFromRows: weight %d×%d, bias %d: %w", w.Rows, w.Cols, len(b), ErrInput)
	}
	if err := checkFinite("bias", b); err != nil {
		return nil, err
	}
	switch opts.Act {
	case ActFloat, ActDynamic:
	case ActStatic:
		if !(opts.ActScale > 0) || math.IsInf(float64(opts.ActScale), 0) {
			return nil, fmt.Errorf("quant: static activations need a positive scale, got %v: %w", opts.ActScale, ErrInput)
		}
	default:
		return nil, fmt.Errorf("quant: unknown activation mode %d: %w", opts.Act, ErrInput)
	}
	if !(opts.Threshold >= 0) {
		return nil, fmt.Errorf("quant: outlier threshold %v: %w", opts.Threshold, ErrInput)
	}
	l := &Linear{In: w.Cols, Out: w.Rows, Weight: w, Act: opts.Act, ActScale: opts.ActScale, Threshold: opts.Threshold, id: linearIDs.Add(1)}
	if b != nil {
		l.Bias = append([]float32(nil), b...)
	}
	return l, nil
}

// PackedBytes returns the bytes of the weight packed for the int8 GEMM, in
// addition to Weight's byte per value (see Linear for the amounts per
// kernel): 0 with ActFloat. It packs the weight if no Forward has yet, as
// the first Forward would.
func (l *Linear) PackedBytes() int {
	if l.init() != nil || l.packed == nil {
		return 0
	}
	return l.packed.Bytes()
}

// Dims returns the input and output widths.
func (l *Linear) Dims() (in, out int) { return l.In, l.Out }

// OwnsWeights reports true: the layer reads only its int8 weight and its
// own copy of the bias, never the model's float32 parameters, so
// model.Model.ReleaseReplaced may free those (model.WeightOwner).
func (l *Linear) OwnsWeights() bool { return true }

// Dequantize returns the dequantized weight in the model's layout [In, Out]
// (a new slice): the float32 weight this layer stands for. Merging an
// adapter into an int8 base is Dequantize, add, NewLinear. The layer itself
// never keeps this float32 copy.
func (l *Linear) Dequantize() []float32 {
	d := make([]float32, l.In*l.Out)
	_ = l.Weight.DequantizeTransposed(d) // validated at construction
	return d
}

// init checks the layer and, for the int8 GEMM (ActDynamic, ActStatic),
// packs its weight, once: the inference path (Forward) needs both.
func (l *Linear) init() error {
	l.once.Do(func() {
		if l.initErr = l.check(); l.initErr != nil {
			return
		}
		if l.Act != ActFloat {
			l.packed = kernels.PackI8B(l.Out, l.In, l.Weight.Data, l.In)
		}
	})
	return l.initErr
}

// check reports whether the layer's fields are consistent. The training
// graph (Int8Linear) needs only this: it multiplies panels dequantized from
// Weight, never the packed weight, so building a graph must not pack (the
// packing is 1–2 more bytes per weight: 1 GB at TinyLlama-1.1B's shapes,
// measured by TestInt8LoRAPeakRSS).
func (l *Linear) check() error {
	if l.Weight == nil || l.Weight.validate() != nil || l.Weight.Rows != l.Out || l.Weight.Cols != l.In || l.In <= 0 || l.In > kernels.MaxI8K {
		return fmt.Errorf("quant: linear: inconsistent weight: %w", ErrInput)
	}
	return nil
}

// BuildGraph adds the layer to a training graph as one frozen op
// (Int8Linear): y = x·deq(W)ᵀ + b with the weight dequantized a panel at a
// time inside the product, and only the input gradient, so that adapters
// (LoRA) train on an int8 base that holds one byte per weight. Activations
// are not quantized in the graph; use QATLinear for that.
func (l *Linear) BuildGraph(gc *model.GraphContext, x *G.Node) (*G.Node, error) {
	y, err := Int8Linear(x, l)
	if err != nil {
		return nil, fmt.Errorf("quant: linear graph: %w", err)
	}
	return y, nil
}

// Forward computes y = x·Wᵀ + b for rows rows (x is rows·In, y rows·Out).
// Non-finite inputs are an error wrapping model.ErrNonFinite.
func (l *Linear) Forward(y, x []float32, rows int) error {
	if err := l.init(); err != nil {
		return err
	}
	in, out := l.In, l.Out
	if rows < 0 || len(x) != rows*in || len(y) != rows*out {
		return fmt.Errorf("quant: linear %d→%d: %d inputs and %d outputs for %d rows: %w", in, out, len(x), len(y), rows, ErrInput)
	}
	if rows == 0 {
		return nil
	}
	if l.Act == ActFloat {
		if err := checkFinite("linear input", x); err != nil {
			return fmt.Errorf("quant: linear input: %w", model.ErrNonFinite)
		}
		l.forwardFloat(y, x, rows)
		return nil
	}
	s, _ := l.scratch.Get().(*linearScratch)
	if s == nil {
		s = &linearScratch{}
	}
	defer l.scratch.Put(s)

	// Outlier columns in one pass over x (only with a threshold); the
	// quantization reports non-finite values in the other columns.
	var skip []bool
	nOut := 0
	if thr := l.Threshold; thr > 0 {
		if cap(s.skip) < in {
			s.skip = make([]bool, in)
		}
		s.skip = s.skip[:in]
		clear(s.skip)
		for r := 0; r < rows; r++ {
			for c, v := range x[r*in : (r+1)*in] {
				a := float32(math.Abs(float64(v)))
				if a >= thr && !s.skip[c] {
					if a > math.MaxFloat32 {
						return fmt.Errorf("quant: linear input: %w", model.ErrNonFinite)
					}
					s.skip[c] = true
					nOut++
				}
			}
		}
	}
	add := false
	if nOut > 0 {
		skip = s.skip[:in]
		s.cols = s.cols[:0]
		for c, o := range skip {
			if o {
				s.cols = append(s.cols, c)
			}
		}
		s.xo = grow(s.xo, rows*nOut)
		s.wo = grow(s.wo, nOut*out)
		for r := 0; r < rows; r++ {
			for i, c := range s.cols {
				s.xo[r*nOut+i] = x[r*in+c]
			}
		}
		w, sc := l.Weight.Data, l.Weight.Scale
		for i, c := range s.cols {
			row := s.wo[i*out : (i+1)*out]
			for o := range row {
				row[o] = float32(w[o*in+c]) * sc[o]
			}
		}
		kernels.Sgemm(false, false, rows, out, nOut, 1, s.xo, nOut, s.wo, out, 0, y, out)
		add = true
	}
	scale := float32(0)
	if l.Act == ActStatic {
		scale = l.ActScale
	}
	if nOut == 0 {
		skip = nil
	}
	if !kernels.QuantizeI8A(rows, in, x, in, scale, skip, &s.pa) {
		return fmt.Errorf("quant: linear input: %w", model.ErrNonFinite)
	}
	kernels.I8GemmF32(&s.pa, l.packed, l.Weight.Scale, l.Bias, y, out, add)
	return nil
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// Options returns the layer's activation mode, static scale and outlier
// threshold, as NewLinear takes them.
func (l *Linear) Options() LinearOptions {
	return LinearOptions{Act: l.Act, ActScale: l.ActScale, Threshold: l.Threshold}
}

// WithDelta returns a new int8 layer for the weight Dequantize() + delta
// (delta [In, Out] in the model's layout, e.g. a merged LoRA update),
// requantized per output channel, with the same bias and options. l is not
// changed.
func (l *Linear) WithDelta(delta []float32) (*Linear, error) {
	if len(delta) != l.In*l.Out {
		return nil, fmt.Errorf("quant: WithDelta: %d values for %d×%d: %w", len(delta), l.In, l.Out, ErrInput)
	}
	w := l.Dequantize()
	for i, d := range delta {
		w[i] += d
	}
	return NewLinear(w, l.Bias, l.In, l.Out, l.Options())
}
