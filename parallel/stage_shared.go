package parallel

// sharedSteps is the step of New's in-process workers, which share one copy
// of the weights: each worker computes its rows (rowSteps), reduce-scatters
// the gradients, so that it holds the sum of its shard, and updates that
// shard of the shared weights in place; there is nothing to gather.
type sharedSteps struct{ rowSteps }

func (s sharedSteps) reduce(w *worker) error { return s.t.reduceScatter(w) }

func (s sharedSteps) gather(*worker) error { return nil }
