package model

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/galleon-ml/galleon/internal/kernels"
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
	return o.StepScaled(grads, 1, lr)
}

// StepScaled is Step with the gradients multiplied by scale first (the
// factor of gradient clipping, ClipScale), in the same pass: grads itself is
// left unchanged. The result is bit for bit that of scaling grads with
// kernels.Scale and calling Step.
func (o *AdamW) StepScaled(grads []float32, scale float32, lr float64) error {
	if err := o.check(grads, 0, o.params.Len()); err != nil {
		return err
	}
	o.update(grads, scale, lr, o.T+1, 0, o.params.Len())
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
	o.update(grads, 1, lr, o.T+1, lo, hi)
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

// update applies step t to elements [lo, hi) in one fused pass per
// element (kernels.AdamW: gradient scale, decoupled decay, both moments and
// the parameter), in chunks that the kernels' threads share. The update is
// memory-bound and element-wise, so chunks of any size give the same bits.
func (o *AdamW) update(grads []float32, scale float32, lr float64, t, lo, hi int) {
	b1, b2 := float32(o.cfg.Beta1), float32(o.cfg.Beta2)
	bc1 := 1 - math.Pow(o.cfg.Beta1, float64(t))
	bc2 := 1 - math.Pow(o.cfg.Beta2, float64(t))
	j := adamJobs.Get()
	*j = adamJob{o: o, grads: grads, lo: lo, hi: hi, decayed: float32(1 - lr*o.cfg.WeightDecay), k: kernels.AdamWParams{
		GradScale: scale, Decay: 1,
		Beta1: b1, OneMinusBeta1: 1 - b1, Beta2: b2, OneMinusBeta2: 1 - b2,
		StepSize: float32(lr / bc1), InvBC2Sqrt: float32(1 / math.Sqrt(bc2)), Eps: float32(o.cfg.Eps),
	}}
	workers := kernels.Threads()
	if hi-lo < 2*adamChunk {
		workers = 1
	}
	kernels.For(workers, (hi-lo+adamChunk-1)/adamChunk, j)
	*j = adamJob{}
	adamJobs.Put(j)
}

// adamChunk is the number of elements of one item of the update: 64 KiB of
// each of the four streams, ~10 µs of work.
const adamChunk = 1 << 14

// adamJob is one update, split into items of adamChunk elements.
type adamJob struct {
	o       *AdamW
	grads   []float32
	lo, hi  int
	decayed float32 // Decay of the decayed spans
	k       kernels.AdamWParams
}

var adamJobs kernels.FreeList[adamJob]

// Item updates chunk i, cut at the boundaries of the decayed spans.
func (j *adamJob) Item(_, i int) {
	a := j.lo + i*adamChunk
	b := min(a+adamChunk, j.hi)
	p, g, m, v := j.o.params.Data, j.grads, j.o.M, j.o.V
	spans := j.o.decay
	s := sort.Search(len(spans), func(x int) bool { return spans[x].hi > a })
	for a < b {
		k := j.k
		e := b
		switch {
		case s < len(spans) && spans[s].lo <= a: // inside a decayed span
			k.Decay = j.decayed
			e = min(b, spans[s].hi)
			s++
		case s < len(spans):
			e = min(b, spans[s].lo)
		}
		kernels.AdamW(p[a:e], g[a:e], m[a:e], v[a:e], &k)
		a = e
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

// ErrNoTargets is returned by Loss and Evaluate, and wrapped by a training
// step's error, when every target is the ignore index −1, so that an empty
// evaluation is never reported as a loss of zero, nor an empty step taken.
var ErrNoTargets = errors.New("no targets to score")

// GradNorm returns the Euclidean norm of grads, accumulated in float64, and
// an error wrapping ErrNonFinite if it is NaN or infinite. The squares are
// summed in blocks of NormBlock elements (kernels.SumSquares64), on the
// kernels' threads, and the block sums added in block order, so the result does not depend on the
// number of threads (and matches a data-parallel trainer that sums the
// same blocks on different ranks).
func GradNorm(grads []float32) (float64, error) {
	j := normJobs.Get()
	j.grads = grads
	nb := (len(grads) + NormBlock - 1) / NormBlock
	if cap(j.sums) < nb {
		j.sums = make([]float64, nb)
	}
	j.sums = j.sums[:nb]
	workers := kernels.Threads()
	if len(grads) < 2*normItem {
		workers = 1
	}
	kernels.For(workers, (nb+normItem/NormBlock-1)/(normItem/NormBlock), j)
	var s float64
	for _, b := range j.sums {
		s += b
	}
	j.grads = nil
	normJobs.Put(j)
	n := math.Sqrt(s)
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return n, fmt.Errorf("model: gradient norm is %v: %w", n, ErrNonFinite)
	}
	return n, nil
}

// NormBlock is the number of gradient elements GradNorm sums in one float64
// block before adding the blocks in order.
const NormBlock = 1024

// normItem is the number of elements of one item of GradNorm's loop.
const normItem = 64 * NormBlock

// normJob is one GradNorm call.
type normJob struct {
	grads []float32
	sums  []float64 // per block
}

var normJobs kernels.FreeList[normJob]

// Item sums the squares of the blocks of item i.
func (j *normJob) Item(_, i int) {
	per := normItem / NormBlock
	for b := i * per; b < min((i+1)*per, len(j.sums)); b++ {
		j.sums[b] = kernels.SumSquares64(j.grads[b*NormBlock : min((b+1)*NormBlock, len(j.grads))])
	}
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
