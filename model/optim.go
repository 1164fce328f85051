package model

import (
	"errors"
	"fmt"
	"github.com/galleon-ml/galleon/internal/kernels"
	"math"
	"sync"
)

// AdamWConfig holds AdamW's hyperparameters. Weight decay applies only to
// parameters whose Decay flag is set.
type AdamWConfig struct {
	Beta1, Beta2 float64 // decay rates of the first and second moment estimates
	Eps          float64 // added to the second moment's square root
	WeightDecay  float64 // decoupled: p −= lr·WeightDecay·p
}

// DefaultAdamW is GPT-2 style AdamW: betas 0.9/0.95, eps 1e-8, decay 0.1.
func DefaultAdamW() AdamWConfig {
	return AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
}

func (c AdamWConfig) validate() error {
	if !(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1) || !(c.Eps > 0) || !(c.WeightDecay >= 0) {
		return fmt.Errorf("model: invalid AdamW config %+v", c)
	}
	return nil
}

// AdamW is the decoupled-weight-decay Adam optimizer over one ParamSet,
// computed as PyTorch computes it so that runs compare step for step. Its
// moments live in buffers laid out like the set, so StepRange can update any
// contiguous shard (data-parallel workers each own one).
type AdamW struct {
	cfg    AdamWConfig
	params *ParamSet
	M, V   []float32 // first and second moments, laid out as params.Data
	T      int       // number of completed steps
	decay  []span    // element ranges of decayed parameters, in order
}

type span struct{ lo, hi int }

// NewAdamW creates the optimizer state for params.
func NewAdamW(params *ParamSet, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	o := &AdamW{cfg: cfg, params: params, M: make([]float32, params.Len()), V: make([]float32, params.Len())}
	for _, p := range params.Params {
		if p.Decay {
			o.decay = append(o.decay, span{p.Offset, p.Offset + p.Size()})
		}
	}
	return o, nil
}

// Config returns the hyperparameters.
func (o *AdamW) Config() AdamWConfig { return o.cfg }

// Step applies one update with learning rate lr from the gradients grads
// (laid out as the parameter set) to every parameter.
func (o *AdamW) Step(grads []float32, lr float64) error {
	if err := o.check(grads, 0, o.params.Len()); err != nil {
		return err
	}
	o.update(grads, lr, o.T+1, 0, o.params.Len())
	o.T++
	return nil
}

// StepRange updates only elements [lo, hi) of the set, as step number
// o.T+1, without advancing o.T: the caller splits one step into shards and
// then calls Advance once. It only reads o.T, so goroutines may update
// disjoint shards of one optimizer concurrently. grads is indexed like the
// whole set.
func (o *AdamW) StepRange(grads []float32, lr float64, lo, hi int) error {
	if err := o.check(grads, lo, hi); err != nil {
		return err
	}
	o.update(grads, lr, o.T+1, lo, hi)
	return nil
}

// Advance counts a step whose shards were applied with StepRange.
func (o *AdamW) Advance() { o.T++ }

func (o *AdamW) check(grads []float32, lo, hi int) error {
	if len(grads) != o.params.Len() {
		return fmt.Errorf("model: AdamW: %d gradients for %d parameters", len(grads), o.params.Len())
	}
	if lo < 0 || hi > o.params.Len() || lo > hi {
		return fmt.Errorf("model: AdamW: bad range [%d, %d) of %d", lo, hi, o.params.Len())
	}
	return nil
}

func (o *AdamW) update(grads []float32, lr float64, t, lo, hi int) {
	b1, b2 := float32(o.cfg.Beta1), float32(o.cfg.Beta2)
	bc1 := 1 - math.Pow(o.cfg.Beta1, float64(t))
	bc2 := 1 - math.Pow(o.cfg.Beta2, float64(t))
	k := adamKernel{b1: b1, b2: b2, stepSize: float32(lr / bc1), invBC2Sqrt: float32(1 / math.Sqrt(bc2)),
		eps: float32(o.cfg.Eps), decayed: float32(1 - lr*o.cfg.WeightDecay)}
	p, m, v := o.params.Data, o.M, o.V
	// Decayed spans first (they are few and sorted); plain Adam for all.
	for _, s := range o.decay {
		a, b := max(s.lo, lo), min(s.hi, hi)
		if a < b {
			kernels.Scale(k.decayed, p[a:b])
		}
	}
	// The update is memory-bound and element-wise: split it over the
	// kernels' threads in contiguous parts (a 124M-parameter step spends
	// seconds here on one core; BenchmarkTrainStep/gpt2-124m).
	n := hi - lo
	parts := min(kernels.Threads(), max(1, n/adamGrain))
	if parts <= 1 {
		k.run(p[lo:hi], grads[lo:hi], m[lo:hi], v[lo:hi])
		return
	}
	var wg sync.WaitGroup
	for i := 0; i < parts; i++ {
		a, b := lo+n*i/parts, lo+n*(i+1)/parts
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.run(p[a:b], grads[a:b], m[a:b], v[a:b])
		}()
	}
	wg.Wait()
}

// adamGrain is the fewest elements worth a goroutine of the update.
const adamGrain = 1 << 16

// adamKernel holds one step's AdamW constants.
type adamKernel struct {
	b1, b2, stepSize, invBC2Sqrt, eps, decayed float32
}

// run applies the Adam update to equal-length slices.
func (k *adamKernel) run(p, g, m, v []float32) {
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	b1, b2, c1, c2 := k.b1, k.b2, 1-k.b1, 1-k.b2
	for i := range p {
		gi := g[i]
		mi := b1*m[i] + c1*gi
		vi := b2*v[i] + c2*gi*gi
		m[i], v[i] = mi, vi
		denom := float32(math.Sqrt(float64(vi)))*k.invBC2Sqrt + k.eps
		p[i] -= k.stepSize * mi / denom
	}
}

// Decay kinds of a Schedule after its warmup.
const (
	DecayCosine = "cosine" // cosine from Peak to Peak·MinRatio at Total (the zero value "" means this too)
	DecayNone   = "none"   // constant Peak (the PyTorch anchor's schedule)
)

// Schedule is a learning-rate schedule: linear warmup from 0 to Peak over
// Warmup steps, then cosine decay to Peak·MinRatio at Total steps. Total =
// 0, or Decay = DecayNone, keeps the rate constant after warmup. Training
// checkpoints store the schedule (JSON, with these field names) so that a
// resumed run uses the rates of the uninterrupted one.
type Schedule struct {
	Peak     float64 `json:"peak_lr"`      // rate at the end of warmup
	Warmup   int     `json:"warmup_steps"` // steps of linear warmup
	Total    int     `json:"total_steps"`  // step at which the cosine reaches its floor (the run's length)
	MinRatio float64 `json:"min_ratio"`    // the cosine's floor as a fraction of Peak
	Decay    string  `json:"decay"`        // DecayCosine ("" too) or DecayNone
}

// Validate reports a schedule that cannot train: a peak that is not positive
// and finite, negative steps, a floor outside [0, 1] or an unknown decay.
func (s Schedule) Validate() error {
	if !(s.Peak > 0) || math.IsInf(s.Peak, 0) || s.Warmup < 0 || s.Total < 0 || !(s.MinRatio >= 0 && s.MinRatio <= 1) {
		return fmt.Errorf("model: invalid schedule %+v: the peak rate must be positive and finite, steps non-negative, min_ratio in [0, 1]", s)
	}
	switch s.Decay {
	case "", DecayCosine, DecayNone:
	default:
		return fmt.Errorf("model: invalid schedule decay %q: want %q or %q", s.Decay, DecayCosine, DecayNone)
	}
	return nil
}

// LR returns the rate for step (0-based).
func (s Schedule) LR(step int) float64 {
	if step < s.Warmup {
		return s.Peak * float64(step+1) / float64(s.Warmup)
	}
	if s.Decay == DecayNone || s.Total <= s.Warmup {
		return s.Peak
	}
	progress := math.Min(1, float64(step-s.Warmup)/float64(s.Total-s.Warmup))
	lo := s.Peak * s.MinRatio
	return lo + (s.Peak-lo)*0.5*(1+math.Cos(math.Pi*progress))
}

// ErrNonFinite is wrapped by errors about NaN or infinite losses and gradients.
var ErrNonFinite = errors.New("non-finite value")

// GradNorm returns the Euclidean norm of grads, accumulated in float64, and
// an error wrapping ErrNonFinite if it is NaN or infinite.
func GradNorm(grads []float32) (float64, error) {
	var s float64
	for _, g := range grads {
		s += float64(g) * float64(g)
	}
	n := math.Sqrt(s)
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return n, fmt.Errorf("model: gradient norm is %v: %w", n, ErrNonFinite)
	}
	return n, nil
}

// ClipScale returns the factor that brings a gradient of norm to maxNorm
// (PyTorch's clip_grad_norm_: maxNorm/(norm+1e-6), capped at 1). maxNorm ≤ 0
// disables clipping.
func ClipScale(norm, maxNorm float64) float32 {
	if maxNorm <= 0 {
		return 1
	}
	c := maxNorm / (norm + 1e-6)
	if c >= 1 {
		return 1
	}
	return float32(c)
}
