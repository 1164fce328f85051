package parallel

import "context"

// sharedSteps is the step of New's in-process workers, which share one copy
// of the weights: each worker reduce-scatters the gradients, so that it
// holds the sum of its shard, and updates that shard of the shared weights
// in place; there is nothing to gather.
type sharedSteps struct{ t *Trainer }

func (s sharedSteps) hold() func() { return noRelease }

func (s sharedSteps) compute(ctx context.Context, w *worker, step int, pre error) (float64, error) {
	if pre != nil {
		return 0, pre
	}
	return s.t.computeRows(ctx, w, step)
}

func (s sharedSteps) reduce(w *worker) error { return s.t.reduceScatter(w) }

func (s sharedSteps) gather(*worker) error { return nil }
