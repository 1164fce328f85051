package parallel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/model"
)

// A rank's step is a fixed pipeline:
//
//	compute → agree → reduce → norm → update → gather
//
//   - compute: forward and backward over the rank's rows of every
//     micro-batch, the gradients weighted so that the reduced gradient is the
//     mean over the step's targets (those that are not the ignore index);
//   - agree: every rank learns every rank's status and loss, so that all
//     stop together when one failed (agree, below);
//   - reduce: the gradients are summed across ranks in a fixed order;
//   - norm: the global gradient norm (gradNorm, below);
//   - update: clipping and AdamW on the rank's optimizer span (update);
//   - gather: the ranks exchange their updated parameters where they hold
//     separate copies.
//
// What compute, reduce and gather do, and what memory a step holds, depends
// on the deployment; each is one implementation of stageSteps in its own
// file: sharedSteps (New), exactSteps (New with Config.Exact), stage0Steps
// to stage3Steps (NewRank at ZeRO stages 0–3). agree, norm and update are
// the same for all.

// stageSteps is the stage-specific part of a step.
type stageSteps interface {
	// hold acquires the memory a step needs beyond what the rank keeps
	// between steps, and returns the function that gives it back when the
	// step ends, however it ends.
	hold() (release func())
	// compute runs forward and backward into w.replica.Grad (cleared
	// before) and returns the rank's weighted share of the loss. pre, when
	// not nil, is a failure found before the step: compute then returns it,
	// after taking part in any exchange its stage needs before computing.
	compute(ctx context.Context, w *worker, step int, pre error) (float64, error)
	// reduce leaves the sum over ranks of the gradients in at least this
	// rank's shard of w.replica.Grad; it runs after agree, a barrier.
	reduce(w *worker) error
	// gather runs after the update.
	gather(w *worker) error
}

// stageOf returns the stage-specific steps of t's deployment.
func stageOf(t *Trainer) stageSteps {
	rows := rowSteps{t}
	switch {
	case t.shared && t.cfg.Exact:
		return exactSteps{t}
	case t.shared:
		return sharedSteps{rows}
	}
	switch t.stage {
	case 0:
		return stage0Steps{rows}
	case 1:
		return stage1Steps{rows}
	case 2:
		return stage2Steps{stage1Steps{rows}}
	}
	return stage3Steps{t}
}

// commit is the point of no return of a step: the first of the workers'
// commit and the caller's cancel wins, for the whole step (all workers of
// New share one). A step whose context is cancelled before it commits
// changes no weight; once committed it runs to the end.
type commit struct{ state atomic.Int32 }

const (
	stepRunning int32 = iota
	stepCommitted
	stepCancelled
)

// commit reports whether the step may update the weights.
func (c *commit) commit() bool {
	c.state.CompareAndSwap(stepRunning, stepCommitted)
	return c.state.Load() == stepCommitted
}

// cancel reports whether the step was stopped before it committed.
func (c *commit) cancel() bool {
	c.state.CompareAndSwap(stepRunning, stepCancelled)
	return c.state.Load() == stepCancelled
}

// errCancelled is what a worker reports when its step was cancelled at the
// commit point; the caller has already returned the context's error.
var errCancelled = errors.New("step cancelled before the update")

// workerStep is one rank's step: the pipeline above.
func (t *Trainer) workerStep(ctx context.Context, w *worker, c *commit, step int, lr float64, pre error) (loss, norm float64, err error) {
	fail := func(err error) (float64, float64, error) {
		return 0, 0, fmt.Errorf("parallel: rank %d: step %d: %w", w.rank, step, err)
	}
	defer t.impl.hold()()

	w.replica.ZeroGrad()
	local, localErr := t.impl.compute(ctx, w, step, pre)
	if localErr == nil && t.testHook != nil {
		localErr = t.testHook(w.rank, step)
	}
	if loss, err = t.agree(w, local, localErr); err != nil {
		return fail(err)
	}
	if err := t.impl.reduce(w); err != nil {
		return fail(fmt.Errorf("gradient reduction: %w", err))
	}
	if norm, err = t.gradNorm(w); err != nil {
		return fail(err)
	}
	if !c.commit() {
		return fail(errCancelled)
	}
	if err := t.update(w, norm, lr); err != nil {
		return fail(err)
	}
	if err := t.impl.gather(w); err != nil {
		return fail(err)
	}
	return loss, norm, nil
}

// agree exchanges the ranks' status: it returns the step's loss (the sum of
// the ranks' shares, in rank order), or, when any rank failed, this rank's
// own error or else one wrapping ErrPeer and naming the first rank that
// failed.
func (t *Trainer) agree(w *worker, loss float64, err error) (float64, error) {
	all, xerr := exchangeStatus(w.comm, stepStatus{failed: err != nil, loss: loss})
	if xerr != nil {
		return 0, xerr
	}
	if err != nil {
		return 0, err
	}
	var sum float64
	for q, s := range all {
		if s.failed {
			return 0, fmt.Errorf("%w: rank %d", ErrPeer, q)
		}
		sum += s.loss
	}
	return sum, nil
}

// gradNorm returns the global gradient norm: a float64 sum of squares per
// block of normBlock elements (kernels.SumSquares64, as model.GradNorm sums
// its blocks), the blocks' sums added in block order, so the
// norm of a given gradient does not depend on the number of ranks. Each rank
// sums the blocks of its shard (reduced by then) and all-gathers the sums.
func (t *Trainer) gradNorm(w *worker) (float64, error) {
	grad, own := w.replica.Grad, t.shards[w.rank]
	nb := (len(grad) + normBlock - 1) / normBlock
	sums := make([]float64, nb)
	for b := own.lo / normBlock; b*normBlock < own.hi; b++ {
		sums[b] = kernels.SumSquares64(grad[b*normBlock : min((b+1)*normBlock, len(grad))])
	}
	counts := make([]int, t.ranks)
	for q, sh := range t.shards {
		if sh.len() > 0 {
			counts[q] = (sh.hi+normBlock-1)/normBlock - sh.lo/normBlock
		}
	}
	if err := allGatherFloat64s(w.comm, sums, counts); err != nil {
		return 0, fmt.Errorf("gradient norm: %w", err)
	}
	var sq float64
	for _, s := range sums {
		sq += s
	}
	norm := math.Sqrt(sq)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return 0, fmt.Errorf("gradient norm is %v: %w", norm, model.ErrNonFinite)
	}
	return norm, nil
}

// update clips the gradient of the rank's optimizer span by the global norm
// and applies AdamW to it.
func (t *Trainer) update(w *worker, norm, lr float64) error {
	grad, os := w.replica.Grad, w.optSpan
	if s := model.ClipScale(norm, t.cfg.ClipNorm); s < 1 {
		kernels.Scale(s, grad[os.lo:os.hi])
	}
	return w.opt.Step(grad[os.lo:os.hi], lr)
}

// computeRows runs forward and backward on w's rows of every micro-batch,
// checking ctx before each. Each part is weighted by its share of the
// step's targets (model.TargetWeight), so the reduced gradient is the mean
// over every target of the step, as model.Trainer's, however the padding
// falls on the ranks.
func (t *Trainer) computeRows(ctx context.Context, w *worker, step int) (float64, error) {
	T := t.cfg.SeqLen
	per := t.cfg.Batch * T
	var loss float64
	for k := range t.cfg.Accum {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		in := t.inputs[k*per+w.rows.lo*T : k*per+w.rows.hi*T]
		tg := t.targets[k*per+w.rows.lo*T : k*per+w.rows.hi*T]
		n := model.CountTargets(tg)
		weight := model.TargetWeight(n, t.stepTargets)
		if t.layers != nil {
			t.gradWeight = weight // stage 3's layers weight their dW alike
		}
		w.setDropout(step, t.cfg.Accum, k, w.rows.lo*T)
		l, err := w.replica.ForwardBackward(in, tg, weight)
		if err != nil {
			return 0, err
		}
		loss += float64(l) * float64(n) / float64(t.stepTargets)
	}
	return loss, nil
}

// reduceScatter sums the gradients bucket by bucket, in a fixed order,
// leaving each rank its shard.
func (t *Trainer) reduceScatter(w *worker) error {
	grad := w.replica.Grad
	for _, b := range t.buckets {
		if err := t.reduceScatterGrad(w, grad[b.lo:b.hi], intersectCounts(b, t.shards)); err != nil {
			return err
		}
	}
	return nil
}

// allGatherParams all-gathers the parameters in spans, each rank
// contributing its shard's part of each.
func (t *Trainer) allGatherParams(w *worker, spans []span) error {
	ps := t.model.Trainable().Data
	for _, b := range spans {
		if err := w.comm.AllGather(ps[b.lo:b.hi], intersectCounts(b, t.shards)); err != nil {
			return fmt.Errorf("parameter all-gather: %w", err)
		}
	}
	return nil
}

// noRelease is the hold of the stages that keep their whole gradient.
func noRelease() {}

// rowSteps is the hold and compute of the stages whose ranks hold the
// whole parameters and gradient buffer through the step and compute their
// rows of every micro-batch (computeRows): New's workers and ZeRO stages
// 0–2 (stage 2 holds its gradient pages itself).
type rowSteps struct{ t *Trainer }

func (s rowSteps) hold() func() { return noRelease }

func (s rowSteps) compute(ctx context.Context, w *worker, step int, pre error) (float64, error) {
	if pre != nil {
		return 0, pre
	}
	return s.t.computeRows(ctx, w, step)
}
