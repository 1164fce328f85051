package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/galleon-ml/galleon/model"
	G "gorgonia.org/gorgonia"
)

// Observer watches activation batches and proposes a static per-tensor scale
// for symmetric int8 quantization. Observers are not safe for concurrent use.
type Observer interface {
	// Observe records one batch. Non-finite values are ignored.
	Observe(x []float32)
	// Scale returns the scale for the data seen so far (1 if none).
	Scale() float32
}

// MinMax observes the running minimum and maximum: scale = max(|min|, |max|)/127,
// so nothing seen saturates.
type MinMax struct {
	Min, Max float32 // the extremes seen so far
	seen     bool
}

// Observe records x.
func (o *MinMax) Observe(x []float32) {
	lo, hi, ok := minMax(x)
	if !ok {
		return
	}
	if !o.seen {
		o.Min, o.Max, o.seen = lo, hi, true
		return
	}
	o.Min, o.Max = min(o.Min, lo), max(o.Max, hi)
}

// Scale returns max(|Min|, |Max|)/127.
func (o *MinMax) Scale() float32 { return ScaleFor(max(-o.Min, o.Max)) }

func minMax(x []float32) (lo, hi float32, ok bool) {
	lo, hi = float32(math.Inf(1)), float32(math.Inf(-1))
	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			continue
		}
		lo, hi, ok = min(lo, v), max(hi, v), true
	}
	return lo, hi, ok
}

// MovingAverageMinMax keeps exponential moving averages of each batch's
// minimum and maximum (PyTorch's MovingAverageMinMaxObserver): the first
// batch sets them, later ones move them by Momentum (0.01 if zero).
type MovingAverageMinMax struct {
	Momentum float32
	Min, Max float32 // the moving averages of the batches' extremes
	seen     bool
}

// Observe records x.
func (o *MovingAverageMinMax) Observe(x []float32) {
	lo, hi, ok := minMax(x)
	if !ok {
		return
	}
	if !o.seen {
		o.Min, o.Max, o.seen = lo, hi, true
		return
	}
	c := o.Momentum
	if c == 0 {
		c = 0.01
	}
	o.Min += c * (lo - o.Min)
	o.Max += c * (hi - o.Max)
}

// Scale returns max(|Min|, |Max|)/127.
func (o *MovingAverageMinMax) Scale() float32 { return ScaleFor(max(-o.Min, o.Max)) }

// sample is a reservoir of |x| values (seeded, so calibration is
// reproducible), the shared state of the percentile and MSE observers.
type sample struct {
	Cap  int // reservoir size; 1<<16 if zero
	vals []float32
	n    int64
	rng  *rand.Rand
}

func (s *sample) observe(x []float32) {
	if s.rng == nil {
		s.rng = rand.New(rand.NewPCG(1, 2))
	}
	c := s.Cap
	if c <= 0 {
		c = 1 << 16
	}
	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			continue
		}
		a := float32(math.Abs(float64(v)))
		s.n++
		if len(s.vals) < c {
			s.vals = append(s.vals, a)
		} else if j := s.rng.Int64N(s.n); j < int64(c) {
			s.vals[j] = a
		}
	}
}

// Percentile sets the clipping range at the P-th percentile of |x| (P in
// (0, 100], 99.99 if zero), estimated on a reservoir sample of Cap values.
type Percentile struct {
	P float64
	sample
}

// Observe records x.
func (o *Percentile) Observe(x []float32) { o.observe(x) }

// Scale returns percentile(|x|, P)/127.
func (o *Percentile) Scale() float32 {
	if len(o.vals) == 0 {
		return 1
	}
	p := o.P
	if p <= 0 || p > 100 {
		p = 99.99
	}
	v := slices.Clone(o.vals)
	slices.Sort(v)
	i := int(math.Ceil(p/100*float64(len(v)))) - 1
	return ScaleFor(v[max(0, min(i, len(v)-1))])
}

// MSE picks the clipping range that minimizes the mean squared quantization
// error Σ(x − QuantDequant(x, s))² over a reservoir sample of |x|, searching
// Steps (100 if zero) ranges between 1% and 100% of the maximum.
type MSE struct {
	Steps int
	sample
}

// Observe records x.
func (o *MSE) Observe(x []float32) { o.observe(x) }

// Scale returns the scale of least squared error.
func (o *MSE) Scale() float32 {
	if len(o.vals) == 0 {
		return 1
	}
	steps := o.Steps
	if steps <= 0 {
		steps = 100
	}
	amax := slices.Max(o.vals)
	best, bestErr := ScaleFor(amax), math.Inf(1)
	for i := steps; i >= 1; i-- {
		s := ScaleFor(amax * float32(i) / float32(steps))
		var e float64
		for _, v := range o.vals {
			d := float64(v - QuantDequant(v, s))
			e += d * d
		}
		if e < bestErr {
			best, bestErr = s, e
		}
	}
	return best
}

// observing wraps a linear layer and shows its inputs to an observer.
type observing struct {
	model.Linear
	obs Observer
}

func (o *observing) Forward(y, x []float32, rows int) error {
	o.obs.Observe(x)
	return o.Linear.Forward(y, x, rows)
}

func (o *observing) BuildGraph(gc *model.GraphContext, x *G.Node) (*G.Node, error) {
	return o.Linear.BuildGraph(gc, x)
}

// Calibrate runs the model's inference path over calibration batches and
// returns, for each named linear layer (all of them if names is empty), the
// static input scale proposed by a fresh observer from newObserver. inputs
// holds whole sequences of T tokens (from model.ValidationWindows or a
// sampler), run batch sequences at a time. The model's layers are restored
// before returning.
func Calibrate(m *model.Model, inputs []int32, T, batch int, names []string, newObserver func() Observer) (map[string]float32, error) {
	if T <= 0 || batch <= 0 || len(inputs) == 0 || len(inputs)%T != 0 || newObserver == nil {
		return nil, fmt.Errorf("quant: calibrate: %d inputs for sequences of %d, batch %d: %w", len(inputs), T, batch, ErrInput)
	}
	if len(names) == 0 {
		names = m.LinearNames()
	}
	obs := map[string]Observer{}
	orig := map[string]model.Linear{}
	defer func() {
		for name, l := range orig {
			_ = m.SetLinear(name, l)
		}
	}()
	for _, name := range names {
		l, err := m.Linear(name)
		if err != nil {
			return nil, fmt.Errorf("quant: calibrate: %w", err)
		}
		o := newObserver()
		if o == nil {
			return nil, fmt.Errorf("quant: calibrate: nil observer: %w", ErrInput)
		}
		obs[name], orig[name] = o, l
		if err := m.SetLinear(name, &observing{Linear: l, obs: o}); err != nil {
			return nil, fmt.Errorf("quant: calibrate: %w", err)
		}
	}
	n := len(inputs) / T
	for i := 0; i < n; i += batch {
		b := min(batch, n-i)
		if _, err := m.Logits(inputs[i*T:(i+b)*T], b, T); err != nil {
			return nil, fmt.Errorf("quant: calibrate: %w", err)
		}
	}
	scales := map[string]float32{}
	for name, o := range obs {
		scales[name] = o.Scale()
	}
	return scales, nil
}
