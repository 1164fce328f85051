package parallel

import "context"

// stage0Steps is ZeRO stage 0 (DDP) under NewRank: the ranks all-reduce the
// gradients and every rank updates the whole model with its whole optimizer,
// so there is nothing to gather.
type stage0Steps struct{ t *Trainer }

func (s stage0Steps) hold() func() { return noRelease }

func (s stage0Steps) compute(ctx context.Context, w *worker, step int, pre error) (float64, error) {
	if pre != nil {
		return 0, pre
	}
	return s.t.computeRows(ctx, w, step)
}

func (s stage0Steps) reduce(w *worker) error {
	grad := w.replica.Grad
	for _, b := range s.t.buckets {
		if err := s.t.allReduceGrad(w, grad[b.lo:b.hi]); err != nil {
			return err
		}
	}
	return nil
}

func (s stage0Steps) gather(*worker) error { return nil }
