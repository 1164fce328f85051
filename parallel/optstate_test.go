package parallel

import (
	"context"
	"math"
	"testing"

	"github.com/galleon-ml/galleon/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// resumeRun trains steps steps of cfg with dropout on the padded data,
// stopping after split steps: it saves the weights and OptimizerState,
// closes the trainer and continues with a new trainer on a fresh model
// given them, as galleon finetune -resume does (the data continues where
// it stopped). split = steps is the uninterrupted run. ranks = 0 runs New;
// otherwise ranks NewRank ranks in one process. It returns every rank's
// final weights.
func resumeRun(t *testing.T, cfg Config, ranks, steps, split int) [][]float32 {
	t.Helper()
	type saved struct {
		weights []float32
		state   OptimizerState
	}
	// phase trains from (weights, state) when given, for n steps.
	phase := func(comm Communicator, rank int, data model.Batcher, from *saved, n int) (saved, error) {
		m := newTestModel(t, withDropout)
		if from != nil {
			copy(m.Trainable().Data, from.weights)
		}
		var tr *Trainer
		var err error
		if comm == nil {
			tr, err = New(m, cfg)
		} else {
			tr, err = NewRank(m, comm, cfg)
		}
		if err != nil {
			return saved{}, err
		}
		if from != nil {
			if err := tr.SetOptimizerState(from.state); err != nil {
				tr.Close()
				return saved{}, err
			}
		}
		for range n {
			if _, err := tr.Step(context.Background(), data); err != nil {
				tr.Close()
				return saved{}, err
			}
		}
		st, err := tr.OptimizerState()
		if err != nil {
			tr.Close()
			return saved{}, err
		}
		if err := tr.Close(); err != nil { // stage 3: gathers the weights
			return saved{}, err
		}
		return saved{append([]float32(nil), m.Trainable().Data...), st}, nil
	}
	both := func(comm Communicator, rank int) ([]float32, error) {
		data := newPaddedData(t)
		s, err := phase(comm, rank, data, nil, split)
		if err != nil || split == steps {
			return s.weights, err
		}
		if s.state.Step != split {
			t.Errorf("rank %d: OptimizerState().Step = %d after %d steps", rank, s.state.Step, split)
		}
		s, err = phase(comm, rank, data, &s, steps-split)
		return s.weights, err
	}
	if ranks == 0 {
		w, err := both(nil, 0)
		require.NoError(t, err)
		return [][]float32{w}
	}
	out := make([][]float32, ranks)
	errs := collective(t, ranks, func(comm Communicator) (err error) {
		out[comm.Rank()], err = both(comm, comm.Rank())
		return err
	})
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
	return out
}

// A run stopped after 2 of 4 steps and resumed from its weights and
// OptimizerState ends with the uninterrupted run's weights bit for bit:
// in-process workers (also in Exact mode) and two ranks at every ZeRO
// stage, whose shards of the moments OptimizerState gathers and
// SetOptimizerState splits again. Dropout masks follow the restored step
// count.
func TestResumeIsBitIdentical(t *testing.T) {
	const steps, split = 4, 2
	cfg := testConfig(2, 6, 2)
	cfg.Schedule.Warmup = 1
	for _, exact := range []bool{false, true} {
		c := cfg
		c.Exact = exact
		want := resumeRun(t, c, 0, steps, steps)[0]
		got := resumeRun(t, c, 0, steps, split)[0]
		assert.Equal(t, Hash(want), Hash(got), "2 workers, exact %v: resumed weights differ (max rel diff %g)", exact, maxRelDiff(got, want, 1e-7))
	}
	stages := []int{0, 1, 2, 3}
	if testing.Short() {
		stages = []int{1, 3}
	}
	for _, stage := range stages {
		c := cfg
		c.Stage = stage
		want := resumeRun(t, c, 2, steps, steps)
		got := resumeRun(t, c, 2, steps, split)
		for r := range got {
			assert.Equal(t, Hash(want[r]), Hash(got[r]), "stage %d rank %d: resumed weights differ", stage, r)
		}
	}
}

// A corrupt or mismatched state is refused before anything changes.
func TestSetOptimizerStateRefusesBadState(t *testing.T) {
	m := newTestModel(t)
	tr, err := New(m, testConfig(2, 4, 1))
	require.NoError(t, err)
	defer tr.Close()
	_, err = tr.Step(context.Background(), newTestData(t, 3))
	require.NoError(t, err)
	good, err := tr.OptimizerState()
	require.NoError(t, err)
	require.Equal(t, 1, good.Step)
	bad := func(f func(*OptimizerState)) OptimizerState {
		s := OptimizerState{Step: good.Step, M: append([]float32(nil), good.M...), V: append([]float32(nil), good.V...)}
		f(&s)
		return s
	}
	for name, s := range map[string]OptimizerState{
		"short":         bad(func(s *OptimizerState) { s.M = s.M[1:] }),
		"NaN moment":    bad(func(s *OptimizerState) { s.M[5] = float32(math.NaN()) }),
		"negative v":    bad(func(s *OptimizerState) { s.V[7] = -1 }),
		"infinite v":    bad(func(s *OptimizerState) { s.V[7] = float32(math.Inf(1)) }),
		"huge step":     bad(func(s *OptimizerState) { s.Step = math.MaxInt64 }),
		"negative step": bad(func(s *OptimizerState) { s.Step = -1 }),
	} {
		assert.Error(t, tr.SetOptimizerState(s), name)
	}
	assert.Equal(t, 1, tr.StepsDone())
	again, err := tr.OptimizerState()
	require.NoError(t, err)
	assert.Equal(t, Hash(good.M), Hash(again.M))
	assert.Equal(t, Hash(good.V), Hash(again.V))
}
