package quant

import (
	"fmt"
	"slices"

	"github.com/galleon-ml/galleon/internal/nn"
	"github.com/galleon-ml/galleon/model"
	G "gorgonia.org/gorgonia"
)

// QATOptions configures InsertFakeQuant.
type QATOptions struct {
	// LSQ learns the weight scales (per output channel) and the activation
	// scale (per tensor) with the LSQ gradient. Without it, weight scales are
	// max|column|/127 at every step and the activation scale comes from an
	// observer updated by every training forward run.
	LSQ bool
	// Layers lists the linear layers to fake-quantize; empty means all.
	Layers []string
	// ActScales holds each layer's initial activation scale (from
	// Calibrate); required. It seeds the LSQ scale, or stands in for the
	// observer until it has seen a batch.
	ActScales map[string]float32
	// NewObserver makes each layer's activation observer without LSQ;
	// MovingAverageMinMax if nil.
	NewObserver func() Observer
}

// QATLinear is a fake-quant linear layer for quantization-aware training; it
// implements model.Linear. It owns float32 copies of the layer's weight and
// bias (and, with LSQ, its scales) in QAT.Params, which is the model's
// trainable set during QAT: fine-tuning updates the linear layers (and LSQ
// scales) while embeddings and LayerNorms stay frozen.
type QATLinear struct {
	Name         string       // the module name of the layer
	Weight, Bias *model.Param // [in, out] and [out] (Bias may be nil)
	// LSQ scales (nil without LSQ): per output channel and per tensor.
	WeightScale, ActScale *model.Param
	// Observer provides the activation scale without LSQ.
	Observer Observer

	in, out  int
	initAct  float32
	actState *FakeQuantState
}

// QAT is a model prepared for quantization-aware training by InsertFakeQuant.
type QAT struct {
	Model  *model.Model          // the model whose linears were swapped
	Params *model.ParamSet       // the trainable fake-quant parameters
	Layers map[string]*QATLinear // the fake-quant layers by module name
	Names  []string              // the swapped modules, in the model's order
	orig   map[string]model.Linear
}

// InsertFakeQuant replaces the named linear layers of m (dense float32 layers)
// with QATLinear layers, registers their parameters with m.AddParams and makes
// them m's trainable set. Train with model.NewTrainer as usual, then Convert.
func InsertFakeQuant(m *model.Model, opts QATOptions) (*QAT, error) {
	names := opts.Layers
	if len(names) == 0 {
		names = m.LinearNames()
	}
	var specs []model.ParamSpec
	dense := map[string]*model.DenseLinear{}
	for _, name := range names {
		l, err := m.Linear(name)
		if err != nil {
			return nil, fmt.Errorf("quant: InsertFakeQuant: %w", err)
		}
		d, ok := l.(*model.DenseLinear)
		if !ok {
			return nil, fmt.Errorf("quant: InsertFakeQuant: layer %q is a %T, not dense: %w", name, l, ErrInput)
		}
		s, ok := opts.ActScales[name]
		if !ok || !(s > 0) {
			return nil, fmt.Errorf("quant: InsertFakeQuant: no initial activation scale for %q: %w", name, ErrInput)
		}
		dense[name] = d
		in, out := d.Dims()
		specs = append(specs, model.ParamSpec{Name: name + ".qat.weight", Shape: []int{in, out}, Decay: true})
		if d.Bias != nil {
			specs = append(specs, model.ParamSpec{Name: name + ".qat.bias", Shape: []int{out}})
		}
		if opts.LSQ {
			specs = append(specs,
				model.ParamSpec{Name: name + ".qat.weight_scale", Shape: []int{out}},
				model.ParamSpec{Name: name + ".qat.act_scale", Shape: []int{1}})
		}
	}
	ps, err := model.NewParamSet(specs)
	if err != nil {
		return nil, fmt.Errorf("quant: InsertFakeQuant: %w", err)
	}
	q := &QAT{Model: m, Params: ps, Layers: map[string]*QATLinear{}, Names: slices.Clone(names), orig: map[string]model.Linear{}}
	for _, name := range names {
		d := dense[name]
		in, out := d.Dims()
		l := &QATLinear{Name: name, Weight: ps.Get(name + ".qat.weight"), in: in, out: out, initAct: opts.ActScales[name], actState: &FakeQuantState{}}
		copy(l.Weight.Data, d.Weight.Data)
		if d.Bias != nil {
			l.Bias = ps.Get(name + ".qat.bias")
			copy(l.Bias.Data, d.Bias.Data)
		}
		if opts.LSQ {
			l.WeightScale, l.ActScale = ps.Get(name+".qat.weight_scale"), ps.Get(name+".qat.act_scale")
			for o := 0; o < out; o++ {
				var amax float32
				for i := 0; i < in; i++ {
					amax = max(amax, abs32(l.Weight.Data[i*out+o]))
				}
				l.WeightScale.Data[o] = ScaleFor(amax)
			}
			l.ActScale.Data[0] = l.initAct
		} else {
			if opts.NewObserver != nil {
				l.Observer = opts.NewObserver()
			}
			if l.Observer == nil {
				l.Observer = &MovingAverageMinMax{}
			}
		}
		l.actState.Observe.Store(true)
		q.Layers[name] = l
		q.orig[name] = d
	}
	if err := m.AddParams(ps); err != nil {
		return nil, fmt.Errorf("quant: InsertFakeQuant: %w", err)
	}
	for _, name := range names {
		if err := m.SetLinear(name, q.Layers[name]); err != nil {
			return nil, fmt.Errorf("quant: InsertFakeQuant: %w", err)
		}
	}
	if err := m.SetTrainable(ps); err != nil {
		return nil, fmt.Errorf("quant: InsertFakeQuant: %w", err)
	}
	return q, nil
}

// Freeze stops the activation observers (the scales stay as they are).
func (q *QAT) Freeze() {
	for _, l := range q.Layers {
		l.actState.Observe.Store(false)
	}
}

// Convert returns the int8 inference model of the fine-tuned QAT model:
// static per-tensor activations with the learned or observed scales, weights
// quantized with the learned (LSQ) or max-based per-channel scales, so its
// logits match the fake-quant model's. The embeddings follow embeddings
// (see Config.Embeddings). Outlier decomposition stays off (threshold 0,
// not DefaultConfig's): the fake-quant training had none, and the logits
// are to match it.
func (q *QAT) Convert(embeddings bool) (*Model, error) {
	return Quantize(q.Model, Config{Act: ActStatic, Layers: q.Names, Embeddings: embeddings})
}

// Remove restores the model's original dense layers and trainable set.
func (q *QAT) Remove() error {
	for name, l := range q.orig {
		if err := q.Model.SetLinear(name, l); err != nil {
			return err
		}
	}
	q.Model.RemoveParams(q.Params)
	return nil
}

// Dims returns the input and output widths.
func (l *QATLinear) Dims() (in, out int) { return l.in, l.out }

// actScale returns the current activation scale.
func (l *QATLinear) actScaleNow() float32 {
	if l.ActScale != nil {
		return positive(l.ActScale.Data[0])
	}
	if s := l.actState.Scales(); len(s) == 1 {
		return s[0]
	}
	return l.initAct
}

// weightScales returns the current per-output-channel weight scales.
func (l *QATLinear) weightScales() []float32 {
	s := make([]float32, l.out)
	if l.WeightScale != nil {
		for o := range s {
			s[o] = positive(l.WeightScale.Data[o])
		}
		return s
	}
	for o := range s {
		var amax float32
		for i := 0; i < l.in; i++ {
			amax = max(amax, abs32(l.Weight.Data[i*l.out+o]))
		}
		s[o] = ScaleFor(amax)
	}
	return s
}

// BuildGraph adds fake-quant(x)·fake-quant(W) + b to the graph.
func (l *QATLinear) BuildGraph(gc *model.GraphContext, x *G.Node) (*G.Node, error) {
	aopts := FakeQuantOptions{LSQ: l.ActScale != nil, Observer: l.Observer, State: l.actState}
	var as, ws *G.Node
	if aopts.LSQ {
		as, ws = gc.Node(l.ActScale), gc.Node(l.WeightScale)
	} else if l.Observer != nil {
		// Until it has seen data, the observer starts from the
		// calibrated scale.
		if mm, ok := l.Observer.(*MovingAverageMinMax); ok && !mm.seen {
			mm.Min, mm.Max, mm.seen = -QMax*l.initAct, QMax*l.initAct, true
		}
	}
	xq, err := FakeQuant(x, as, aopts)
	if err != nil {
		return nil, err
	}
	wq, err := FakeQuant(gc.Node(l.Weight), ws, FakeQuantOptions{PerChannel: true, LSQ: ws != nil})
	if err != nil {
		return nil, err
	}
	var b *G.Node
	if l.Bias != nil {
		b = gc.Node(l.Bias)
	}
	y, err := nn.Linear(xq, wq, b, nn.LinearOpts{})
	if err != nil {
		return nil, fmt.Errorf("quant: QAT linear: %w", err)
	}
	return y, nil
}

// Forward computes the fake-quant layer without a graph (the current scales;
// observers are not updated): y = QuantDequant(x, s_a)·QuantDequant(W, s_w) + b.
func (l *QATLinear) Forward(y, x []float32, rows int) error {
	if rows < 0 || len(x) != rows*l.in || len(y) != rows*l.out {
		return fmt.Errorf("quant: QAT linear %d→%d: %d inputs and %d outputs for %d rows: %w", l.in, l.out, len(x), len(y), rows, ErrInput)
	}
	sa := l.actScaleNow()
	xq := make([]float32, len(x))
	for i, v := range x {
		xq[i] = QuantDequant(v, sa)
	}
	sw := l.weightScales()
	wq := make([]float32, len(l.Weight.Data))
	for i, v := range l.Weight.Data {
		wq[i] = QuantDequant(v, sw[i%l.out])
	}
	var b []float32
	if l.Bias != nil {
		b = l.Bias.Data
	}
	return nn.LinearForward(y, xq, wq, b, rows, l.in, l.out)
}

// convert builds the int8 layer: weights quantized with the current scales,
// activations static with the layer's own scale unless opts gives one.
func (l *QATLinear) convert(opts LinearOptions) (*Linear, error) {
	sw := l.weightScales()
	r := &Rows{Rows: l.out, Cols: l.in, Data: make([]int8, l.in*l.out), Scale: sw}
	for i := 0; i < l.in; i++ {
		for o := 0; o < l.out; o++ {
			r.Data[o*l.in+i] = Round(l.Weight.Data[i*l.out+o], sw[o])
		}
	}
	if opts.Act == ActStatic && opts.ActScale == 0 {
		opts.ActScale = l.actScaleNow()
	}
	var b []float32
	if l.Bias != nil {
		b = l.Bias.Data
	}
	return NewLinearFromRows(r, b, opts)
}
