package parallel

// stage0Steps is ZeRO stage 0 (DDP) under NewRank: the ranks compute their
// rows (rowSteps), all-reduce the gradients, and every rank updates the
// whole model with its whole optimizer, so there is nothing to gather.
type stage0Steps struct{ rowSteps }

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
