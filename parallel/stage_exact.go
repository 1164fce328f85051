package parallel

import (
	"context"

	"github.com/galleon-ml/galleon/model"
)

// exactSteps is the step of New with Config.Exact: every sample runs forward
// and backward alone and its gradient, weighted by the sample's share of the
// step's targets, is kept; the reduction adds,
// for each worker's shard, the gradients of all samples in global sample
// order (micro-batch, then rank, then row), so the sum does not depend on
// how the samples were split across workers.
type exactSteps struct{ t *Trainer }

func (s exactSteps) hold() func() { return noRelease }

func (s exactSteps) compute(ctx context.Context, w *worker, step int, pre error) (float64, error) {
	if pre != nil {
		return 0, pre
	}
	t := s.t
	T := t.cfg.SeqLen
	per := t.cfg.Batch * T
	var loss float64
	for k := range t.cfg.Accum {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		for j := range w.rows.len() {
			at := k*per + (w.rows.lo+j)*T
			w.replica.ZeroGrad()
			w.setDropout(step, t.cfg.Accum, k, (w.rows.lo+j)*T)
			n := model.CountTargets(t.targets[at : at+T])
			l, err := w.replica.ForwardBackward(t.inputs[at:at+T], t.targets[at:at+T], model.TargetWeight(n, t.stepTargets))
			if err != nil {
				return 0, err
			}
			t.keepSample(w.samples[k*w.rows.len()+j], w.replica.Grad)
			loss += float64(l) * float64(n) / float64(t.stepTargets)
		}
	}
	return loss, nil
}

// reduce runs after agree, a barrier: every worker's sample gradients are
// ready to be read.
func (s exactSteps) reduce(w *worker) error {
	t := s.t
	var order [][]float32
	for k := range t.cfg.Accum {
		for _, q := range t.workers {
			nq := q.rows.len()
			order = append(order, q.samples[k*nq:(k+1)*nq]...)
		}
	}
	own := t.shards[w.rank]
	t.sumSamples(w.replica.Grad, order, own.lo, own.hi)
	return nil
}

func (s exactSteps) gather(*worker) error { return nil }
