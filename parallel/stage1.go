package parallel

import "context"

// stage1Steps is ZeRO stage 1 under NewRank: the ranks reduce-scatter the
// gradients, each updates its shard with its shard of the optimizer, and
// they all-gather the updated parameters.
type stage1Steps struct{ t *Trainer }

func (s stage1Steps) hold() func() { return noRelease }

func (s stage1Steps) compute(ctx context.Context, w *worker, step int, pre error) (float64, error) {
	if pre != nil {
		return 0, pre
	}
	return s.t.computeRows(ctx, w, step)
}

func (s stage1Steps) reduce(w *worker) error { return s.t.reduceScatter(w) }

func (s stage1Steps) gather(w *worker) error { return s.t.allGatherParams(w, s.t.buckets) }
