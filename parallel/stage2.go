package parallel

// stage2Steps is ZeRO stage 2 under NewRank: it communicates as stage 1 and
// keeps only its gradient shard between steps. The gradient buffer is mapped
// memory (Trainer.mapGrads) whose pages outside the shard are given back
// when the step ends: the reduce-scatter, the last reader of the other
// ranks' parts, is over by then.
type stage2Steps struct{ stage1Steps }

func (s stage2Steps) hold() func() { return holdGrads(s.t) }

// holdGrads populates the whole gradient buffer for a step (stages 2 and 3)
// and returns the function that gives the pages outside the shard back.
func holdGrads(t *Trainer) func() {
	t.gradRelease.acquire()
	return t.gradRelease.release
}
