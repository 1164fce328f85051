package parallel

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// OptimizerState is the state that continues a data-parallel run exactly,
// beside the weights and the data's position: the number of optimizer steps
// taken, which the learning-rate schedule, AdamW's bias correction and the
// dropout masks follow, and AdamW's moments, laid out as the model's flat
// trainable vector (model.ParamSet.Data) whatever the ranks' shards.
type OptimizerState struct {
	Step int       // optimizer steps taken
	M, V []float32 // AdamW's first and second moments
}

// OptimizerState returns a copy of the run's optimizer state, to be saved
// with the weights in a checkpoint. Under New, and at ZeRO stage 0 under
// NewRank, this process holds all of it. At stages 1–3 each rank holds the
// moments of its shard only, and OptimizerState all-gathers them: it is then
// a collective, which every rank calls. (At stage 3 the weights also need
// GatherParams before they are saved.)
func (t *Trainer) OptimizerState() (OptimizerState, error) {
	if len(t.workers) == 0 {
		return OptimizerState{}, errors.New("parallel: optimizer state: trainer is closed")
	}
	_ = t.join(context.Background())
	psi := t.model.Trainable().Len()
	s := OptimizerState{Step: t.steps, M: make([]float32, psi), V: make([]float32, psi)}
	for _, w := range t.workers {
		copy(s.M[w.optSpan.lo:w.optSpan.hi], w.opt.M)
		copy(s.V[w.optSpan.lo:w.optSpan.hi], w.opt.V)
	}
	if t.shared || t.stage == 0 {
		return s, nil
	}
	w := t.workers[0]
	for _, b := range t.buckets {
		counts := intersectCounts(b, t.shards)
		for _, buf := range [][]float32{s.M, s.V} {
			if err := w.comm.AllGather(buf[b.lo:b.hi], counts); err != nil {
				return OptimizerState{}, fmt.Errorf("parallel: rank %d: optimizer state: %w", w.rank, err)
			}
		}
	}
	return s, nil
}

// SetOptimizerState restores a state that OptimizerState returned for a
// run of the same model and trainable layout, so that the next Step
// continues that run: the step count, and each rank's part of the moments.
// The moments are checked first (finite, second moments non-negative): a
// corrupt checkpoint is an error naming the element, not NaN weights
// later. Under NewRank every rank calls it with the same state; it is not
// a collective. The weights are the caller's to restore (before NewRank,
// whose broadcast then gives every rank rank 0's).
func (t *Trainer) SetOptimizerState(s OptimizerState) error {
	if len(t.workers) == 0 {
		return errors.New("parallel: optimizer state: trainer is closed")
	}
	_ = t.join(context.Background())
	psi := t.model.Trainable().Len()
	switch {
	case len(s.M) != psi || len(s.V) != psi:
		return fmt.Errorf("parallel: optimizer state: moments of %d and %d elements for %d trainable weights", len(s.M), len(s.V), psi)
	case s.Step < 0 || s.Step > math.MaxInt32:
		return fmt.Errorf("parallel: optimizer state: step %d outside [0, 2^31)", s.Step)
	}
	for i := range s.M {
		m, v := float64(s.M[i]), float64(s.V[i])
		if math.IsNaN(m) || math.IsInf(m, 0) || !(v >= 0) || math.IsInf(v, 0) {
			return fmt.Errorf("parallel: optimizer state: element %d: moments %v, %v (want finite, the second non-negative)", i, m, v)
		}
	}
	for _, w := range t.workers {
		copy(w.opt.M, s.M[w.optSpan.lo:w.optSpan.hi])
		copy(w.opt.V, s.V[w.optSpan.lo:w.optSpan.hi])
		w.opt.T = s.Step
	}
	t.steps = s.Step
	return nil
}
