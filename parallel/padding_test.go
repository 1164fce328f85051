package parallel

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/galleon-ml/galleon/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// paddedData is padded fine-tuning data: the sampler's windows with the
// tail of each row padded (input 0, target −1) to a length that varies
// from row to row, some rows left with no target at all, so that the ranks'
// rows of a micro-batch carry very different numbers of targets.
type paddedData struct {
	model.Batcher
	T    int
	rows int // rows drawn so far: a row's padding depends only on its index
}

func newPaddedData(t testing.TB) *paddedData {
	return &paddedData{Batcher: newTestData(t, 3), T: testModelConfig().SeqLen}
}

func (d *paddedData) NextBatch(in, tg []int32) error {
	if err := d.Batcher.NextBatch(in, tg); err != nil {
		return err
	}
	for r := range len(in) / d.T {
		// Lengths 0, 1, ... T, scattered over the rows.
		g := d.rows + r
		n := (g*7 + g*g*3) % (d.T + 1)
		for i := r*d.T + n; i < (r+1)*d.T; i++ {
			in[i], tg[i] = 0, -1
		}
	}
	d.rows += len(in) / d.T
	return nil
}

// trainPadded trains a fresh model on padded data, with model.Trainer for
// workers = 0 and New otherwise.
func trainPadded(t *testing.T, cfg Config, steps int) run {
	t.Helper()
	m := newTestModel(t)
	data := newPaddedData(t)
	var r run
	if cfg.Workers == 0 {
		mt, err := model.NewTrainer(m, model.TrainConfig{Batch: cfg.Batch, Accum: cfg.Accum, Schedule: cfg.Schedule, AdamW: cfg.AdamW, ClipNorm: cfg.ClipNorm})
		require.NoError(t, err)
		defer mt.Close()
		for range steps {
			st, err := mt.Step(context.Background(), data)
			require.NoError(t, err)
			r.losses = append(r.losses, st.Loss)
		}
	} else {
		tr, err := New(m, cfg)
		require.NoError(t, err)
		defer tr.Close()
		for range steps {
			st, err := tr.Step(context.Background(), data)
			require.NoError(t, err)
			r.losses = append(r.losses, st.Loss)
		}
	}
	r.weights = append([]float32(nil), m.Trainable().Data...)
	return r
}

// On padded data, N workers train what one worker trains with the same
// global batch: the step's loss and gradient are the mean over every target
// of the step, not the mean of the workers' (or micro-batches') own means.
// Before the targets were counted, nearly every weight of the 2- and
// 4-worker runs here, and of the accumulated run, was outside the rounding
// tolerances of TestWorkersMatchOneWorker after 3 steps; they hold now.
func TestPaddedWorkersMatchOneWorker(t *testing.T) {
	cfg := testConfig(0, 6, 2)
	cfg.AdamW.Eps = compareEps // see the tolerances' comment
	const steps = 3
	ref := trainPadded(t, cfg, steps) // model.Trainer
	for _, n := range []int{1, 2, 4} {
		cfg.Workers = n
		got := trainPadded(t, cfg, steps)
		checkClose(t, fmt.Sprintf("workers=%d: weights", n), got.weights, ref.weights, weightRtol, weightAtol)
		for i := range got.losses {
			assert.InDelta(t, ref.losses[i], got.losses[i], 1e-5*ref.losses[i], "workers=%d: step %d loss", n, i+1)
		}
	}
	// Accumulation: 3 micro-batches of 2 are the whole batch of 6.
	acc := testConfig(0, 2, 3)
	acc.AdamW.Eps = compareEps
	whole := testConfig(0, 6, 1)
	whole.AdamW.Eps = compareEps
	checkClose(t, "model.Trainer, 3×2 accumulation vs a batch of 6", trainPadded(t, acc, steps).weights, trainPadded(t, whole, steps).weights, weightRtol, weightAtol)
	acc.Workers = 2
	whole.Workers = 3
	checkClose(t, "2 workers × 3 micro-batches of 2 vs 3 workers on 6", trainPadded(t, acc, steps).weights, trainPadded(t, whole, steps).weights, weightRtol, weightAtol)
}

// Exact mode weights each sample by its share of the step's targets: still
// the same bits for any number of workers on padded data.
func TestPaddedExactIsBitIdentical(t *testing.T) {
	cfg := testConfig(1, 6, 2)
	cfg.Exact = true
	ref := trainPadded(t, cfg, 3)
	for _, n := range []int{2, 3} {
		cfg.Workers = n
		got := trainPadded(t, cfg, 3)
		assert.Equal(t, Hash(ref.weights), Hash(got.weights), "exact, %d workers: max rel diff %g", n, maxRelDiff(got.weights, ref.weights, 1e-7))
		// The loss is summed in float64 per worker, then across workers.
		assert.InDeltaSlice(t, ref.losses, got.losses, 1e-12, "exact, %d workers: losses", n)
	}
}

// The ZeRO stages weight their rows alike (stage 3 also in the layers that
// gather their weights inside the graph): two ranks end with the in-process
// workers' weights bit for bit on padded data.
func TestPaddedStagesMatchSharedWorkers(t *testing.T) {
	cfg := testConfig(2, 6, 2)
	want := Hash(trainPadded(t, cfg, 3).weights)
	for _, stage := range []int{0, 1, 2, 3} {
		c := cfg
		c.Stage = stage
		for r, w := range trainRanksOn(t, c, 2, 3, func() model.Batcher { return newPaddedData(t) }) {
			assert.Equal(t, want, Hash(w), "stage %d rank %d", stage, r)
		}
	}
}

// allIgnored is data whose targets are all the ignore index.
type allIgnored struct{ model.Batcher }

func (d allIgnored) NextBatch(in, tg []int32) error {
	err := d.Batcher.NextBatch(in, tg)
	for i := range tg {
		tg[i] = -1
	}
	return err
}

// A step with no target to learn from is an error, before any weight
// changes, in both trainers.
func TestStepWithoutTargetsFails(t *testing.T) {
	m := newTestModel(t)
	before := Hash(m.Trainable().Data)
	tr, err := New(m, testConfig(2, 4, 2))
	require.NoError(t, err)
	defer tr.Close()
	_, err = tr.Step(context.Background(), allIgnored{newTestData(t, 3)})
	require.ErrorIs(t, err, model.ErrNoTargets)
	assert.Equal(t, before, Hash(m.Trainable().Data))
	st, err := tr.Step(context.Background(), newTestData(t, 3))
	require.NoError(t, err, "a step after the refused one")
	assert.False(t, math.IsNaN(st.Loss))

	m2 := newTestModel(t)
	mt, err := model.NewTrainer(m2, model.TrainConfig{Batch: 4, Accum: 2, Schedule: testConfig(1, 4, 2).Schedule, AdamW: model.DefaultAdamW()})
	require.NoError(t, err)
	defer mt.Close()
	_, err = mt.Step(context.Background(), allIgnored{newTestData(t, 3)})
	require.ErrorIs(t, err, model.ErrNoTargets)
	assert.Equal(t, before, Hash(m2.Trainable().Data))
	assert.Equal(t, 0, mt.StepsDone())
}
