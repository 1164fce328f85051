package parallel

// stage1Steps is ZeRO stage 1 under NewRank: the ranks compute their rows
// (rowSteps), reduce-scatter the gradients, each updates its shard with its
// shard of the optimizer, and they all-gather the updated parameters.
type stage1Steps struct{ rowSteps }

func (s stage1Steps) reduce(w *worker) error { return s.t.reduceScatter(w) }

func (s stage1Steps) gather(w *worker) error { return s.t.allGatherParams(w, s.t.buckets) }
