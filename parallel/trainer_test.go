package parallel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syntheticText is a small Go-like corpus, so tests need no GOROOT scan.
func syntheticText(n int) []byte {
	const src = "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfor i := 0; i < 10; i++ {\n\t\tfmt.Println(i)\n\t}\n}\n// a comment about loops\n"
	b := make([]byte, n)
	for i := range b {
		b[i] = src[(i*7+i/len(src))%len(src)]
	}
	return b
}

func testModelConfig() model.Config {
	return model.Config{Vocab: 256, DModel: 32, Layers: 2, Heads: 2, KVHeads: 2, SeqLen: 16, MLPRatio: 4,
		TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: model.AttentionFlash}
}

func testConfig(workers, batch, accum int) Config {
	return Config{Workers: workers, Batch: batch, Accum: accum,
		Schedule: model.Schedule{Peak: 3e-3, Warmup: 2, Total: 10, MinRatio: 0.1},
		AdamW:    model.DefaultAdamW(), ClipNorm: 1, BucketBytes: 16 << 10}
}

func newTestModel(t testing.TB, mut ...func(*model.Config)) *model.Model {
	t.Helper()
	mc := testModelConfig()
	for _, f := range mut {
		f(&mc)
	}
	m, err := model.New(mc, 7)
	require.NoError(t, err)
	return m
}

func newTestData(t testing.TB, seed uint64) model.Batcher {
	t.Helper()
	s, err := model.NewSampler(syntheticText(30000), testModelConfig().SeqLen, seed)
	require.NoError(t, err)
	return s
}

type run struct {
	weights []float32
	grads   []float32 // the last step's reduced (clipped) gradient, assembled from the shards
	losses  []float64
}

// trainShared trains a fresh model with New for steps steps.
func trainShared(t testing.TB, cfg Config, steps int, mut ...func(*model.Config)) run {
	t.Helper()
	m := newTestModel(t, mut...)
	tr, err := New(m, cfg)
	require.NoError(t, err)
	defer tr.Close()
	data := newTestData(t, 3)
	var r run
	for range steps {
		st, err := tr.Step(context.Background(), data)
		require.NoError(t, err)
		r.losses = append(r.losses, st.Loss)
	}
	r.grads = make([]float32, m.Trainable().Len())
	for _, w := range tr.workers {
		s := tr.shards[w.rank]
		copy(r.grads[s.lo:s.hi], w.replica.Grad[s.lo:s.hi])
	}
	r.weights = append([]float32(nil), m.Trainable().Data...)
	return r
}

// maxRelDiff returns max |a−b| / (|b| + atol) over the elements.
func maxRelDiff(a, b []float32, atol float64) float64 {
	var worst float64
	for i := range a {
		d := math.Abs(float64(a[i])-float64(b[i])) / (math.Abs(float64(b[i])) + atol)
		worst = max(worst, d)
	}
	return worst
}

func TestOneWorkerMatchesModelTrainer(t *testing.T) {
	// One worker runs the single-replica loop's exact operations, so the
	// weights agree bit for bit with model.Trainer. (Without clipping: the
	// norm is summed by blocks here and in one pass there.) With dropout,
	// both must draw the same masks.
	for _, dropout := range []float32{0, 0.1} {
		mut := func(c *model.Config) { c.Dropout = dropout }
		cfg := testConfig(1, 4, 2)
		cfg.ClipNorm = 0
		got := trainShared(t, cfg, 3, mut)

		m := newTestModel(t, mut)
		mt2, err := model.NewTrainer(m, model.TrainConfig{Batch: 4, Accum: 2, Schedule: cfg.Schedule, AdamW: cfg.AdamW, ClipNorm: cfg.ClipNorm})
		require.NoError(t, err)
		data := newTestData(t, 3)
		for range 3 {
			if _, err := mt2.Step(context.Background(), data); err != nil {
				t.Fatal(err)
			}
		}
		mt2.Close()
		if Hash(got.weights) != Hash(m.Weights.Data) {
			t.Fatalf("dropout %v: one parallel worker differs from model.Trainer: max rel diff %g", dropout, maxRelDiff(got.weights, m.Weights.Data, 1e-6))
		}
	}
}

func maxAbs(x []float32) float64 {
	var m float64
	for _, v := range x {
		m = max(m, math.Abs(float64(v)))
	}
	return m
}

// Tolerances of the N-worker vs 1-worker comparison. The ranks split a
// micro-batch by rows, so the float32 sums inside the backward pass (over a
// worker's rows) and across workers group the same terms differently: the
// reduced gradients agree to rounding, compared below with rtol 1e-5 plus
// 1e-6·max|g| for the elements that cancel to almost nothing. Adam then
// divides by √v̂+ε: an element whose gradient is at that rounding level
// (|g| ≈ 1e-9 here) moves by about lr·sign(g) either way, so with ε = 1e-8 a
// handful of such elements differ by up to 2·lr after any number of steps,
// whatever the reduction. That amplification belongs to Adam, not to the
// reduction; the parameter comparison therefore uses ε = 1e-4, where an
// update is smooth in the gradient below |g| ≈ ε, and then holds every
// parameter to rtol 1e-5 (+1e-7 absolute for weights near zero) after 5
// steps. (Ranks of one worker count agree bit for bit: see
// TestZeROStagesMatchSharedWorkers.)
const (
	gradRtol   = 1e-5
	gradAtol   = 1e-6 // × max|g|
	weightRtol = 1e-5
	weightAtol = 1e-7
	compareEps = 1e-4
)

func checkClose(t *testing.T, what string, got, want []float32, rtol, atol float64) {
	t.Helper()
	bad := 0
	for i := range got {
		if math.Abs(float64(got[i])-float64(want[i])) > rtol*math.Abs(float64(want[i]))+atol {
			if bad < 5 {
				t.Errorf("%s[%d] = %v, want %v (rtol %g, atol %g)", what, i, got[i], want[i], rtol, atol)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements out of tolerance", what, bad, len(got))
	}
}

func TestWorkersMatchOneWorker(t *testing.T) {
	// Gradients of the first step, from identical weights, default AdamW.
	ref := trainShared(t, testConfig(1, 10, 1), 1)
	atol := gradAtol * maxAbs(ref.grads)
	for _, n := range []int{2, 3} { // 10 samples over 3 workers: 4, 3, 3 rows
		got := trainShared(t, testConfig(n, 10, 1), 1)
		checkClose(t, fmt.Sprintf("workers=%d: reduced gradient", n), got.grads, ref.grads, gradRtol, atol)
	}
	// Parameters after 5 AdamW steps.
	cfg := testConfig(1, 10, 1)
	cfg.AdamW.Eps = compareEps
	ref = trainShared(t, cfg, 5)
	for _, n := range []int{2, 3} {
		cfg.Workers = n
		got := trainShared(t, cfg, 5)
		checkClose(t, fmt.Sprintf("workers=%d: weights after 5 steps", n), got.weights, ref.weights, weightRtol, weightAtol)
		for i := range got.losses {
			if d := math.Abs(got.losses[i] - ref.losses[i]); d > 1e-5*ref.losses[i] {
				t.Errorf("workers=%d: step %d loss %v, want %v", n, i+1, got.losses[i], ref.losses[i])
			}
		}
	}
}

func TestExactModeIsBitIdenticalForAnyWorkerCount(t *testing.T) {
	// Default AdamW (ε = 1e-8) and clipping: nothing to tolerate.
	cfg := testConfig(1, 10, 2)
	cfg.Exact = true
	ref := trainShared(t, cfg, 5)
	for _, n := range []int{2, 3} {
		cfg.Workers = n
		got := trainShared(t, cfg, 5)
		if Hash(got.weights) != Hash(ref.weights) {
			t.Errorf("exact, workers=%d: weights differ from 1 worker (max rel diff %g)", n, maxRelDiff(got.weights, ref.weights, 1e-7))
		}
	}
	// Accumulation 4×2 against 1×8.
	whole := testConfig(1, 8, 1)
	whole.Exact = true
	acc := testConfig(2, 2, 4)
	acc.Exact = true
	if Hash(trainShared(t, whole, 3).weights) != Hash(trainShared(t, acc, 3).weights) {
		t.Error("exact: 4 micro-batches × 2 workers differ from 1 worker on the whole batch")
	}
	// With dropout: a sample draws the same mask on whichever worker holds
	// it, so exact runs stay bit-identical.
	drop := func(c *model.Config) { c.Dropout = 0.1 }
	cfg.Workers = 1
	dref := trainShared(t, cfg, 3, drop)
	cfg.Workers = 3
	if Hash(trainShared(t, cfg, 3, drop).weights) != Hash(dref.weights) {
		t.Error("exact with dropout: 3 workers differ from 1")
	}
	if Hash(dref.weights) == Hash(trainShared(t, cfg, 3).weights) {
		t.Error("dropout had no effect")
	}
	// Per-sample replicas (exact) and one whole-batch replica (default)
	// draw the same masks only if rows are placed at their global index.
	ddef := trainShared(t, testConfig(1, 10, 2), 1, drop)
	dex := trainShared(t, cfg, 1, drop)
	checkClose(t, "exact vs default with dropout: reduced gradient", dex.grads, ddef.grads, gradRtol, gradAtol*maxAbs(ddef.grads))
	// Close to the default mode (same data, different summation order).
	def := trainShared(t, testConfig(1, 10, 2), 1)
	cfg.Workers = 3
	ex := trainShared(t, cfg, 1)
	checkClose(t, "exact vs default: reduced gradient", ex.grads, def.grads, gradRtol, gradAtol*maxAbs(def.grads))
}

func TestAccumulationMatchesWholeBatch(t *testing.T) {
	// 4 micro-batches of 2 samples on 2 workers (one sample each) against
	// one worker on the whole batch of 8: the sampler draws the same 8
	// windows either way.
	cfg := testConfig(1, 8, 1)
	ref := trainShared(t, cfg, 1)
	got := trainShared(t, testConfig(2, 2, 4), 1)
	checkClose(t, "4×2 accumulation: reduced gradient", got.grads, ref.grads, gradRtol, gradAtol*maxAbs(ref.grads))

	cfg.AdamW.Eps = compareEps
	ref = trainShared(t, cfg, 5)
	acc := testConfig(2, 2, 4)
	acc.AdamW.Eps = compareEps
	got = trainShared(t, acc, 5)
	checkClose(t, "4×2 accumulation: weights after 5 steps", got.weights, ref.weights, weightRtol, weightAtol)
}

func TestInProcessRunsAreDeterministic(t *testing.T) {
	a := trainShared(t, testConfig(3, 10, 2), 3)
	b := trainShared(t, testConfig(3, 10, 2), 3)
	require.Equal(t, Hash(a.weights), Hash(b.weights), "weights of two identical 3-worker runs")
	require.Equal(t, Hash(a.grads), Hash(b.grads), "gradients of two identical 3-worker runs")
	require.Equal(t, a.losses, b.losses)
}

// trainRanks runs n ranks with NewRank on an in-process group, each with its
// own model (the test model changed by mut; rank r's model is initialised
// from seed 7+r: the broadcast must replace it with rank 0's), and returns
// every rank's final weights.
func trainRanks(t *testing.T, cfg Config, n, steps int, mut ...func(*model.Config)) [][]float32 {
	t.Helper()
	return trainRanksOn(t, cfg, n, steps, func() model.Batcher { return newTestData(t, 3) }, mut...)
}

// trainRanksOn is trainRanks with each rank's data from newData.
func trainRanksOn(t *testing.T, cfg Config, n, steps int, newData func() model.Batcher, mut ...func(*model.Config)) [][]float32 {
	t.Helper()
	mc := testModelConfig()
	for _, f := range mut {
		f(&mc)
	}
	out := make([][]float32, n)
	errs := collective(t, n, func(comm Communicator) error {
		r := comm.Rank()
		m, err := model.New(mc, uint64(7+r))
		if err != nil {
			return err
		}
		tr, err := NewRank(m, comm, cfg)
		if err != nil {
			return err
		}
		data := newData()
		for i := range steps {
			if _, err := tr.Step(context.Background(), data); err != nil {
				tr.Close()
				return err
			}
			if i == 0 { // a whole model mid-run, then training goes on
				if err := tr.GatherParams(); err != nil {
					return err
				}
				for _, x := range m.Trainable().Data[:8] {
					if x == 0 {
						return fmt.Errorf("rank %d: zero weight after GatherParams", r)
					}
				}
			}
		}
		if err := tr.Close(); err != nil {
			return err
		}
		for _, name := range m.LinearNames() {
			if l, _ := m.Linear(name); l == nil || !isDense(l) {
				return fmt.Errorf("rank %d: layer %s is a %T after Close", r, name, l)
			}
		}
		out[r] = append([]float32(nil), m.Trainable().Data...)
		return nil
	})
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
	return out
}

// newStageRank starts one rank of a two-rank group at ZeRO stage stage,
// with a global batch of 4 samples.
func newStageRank(t *testing.T, comm Communicator, stage int) (*Trainer, error) {
	cfg := testConfig(2, 4, 1)
	cfg.Stage = stage
	return NewRank(newTestModel(t), comm, cfg)
}

func isDense(l model.Linear) bool {
	_, ok := l.(*model.DenseLinear)
	return ok
}

func TestZeROStagesMatchSharedWorkers(t *testing.T) {
	steps, counts := 3, []int{2, 3}
	if testing.Short() {
		counts = counts[:1]
	}
	for _, n := range counts {
		cfg := testConfig(n, 10, 2)
		want := Hash(trainShared(t, cfg, steps).weights)
		for stage := range 4 {
			c := cfg
			c.Stage = stage
			ranks := trainRanks(t, c, n, steps)
			for r, w := range ranks {
				if Hash(w) != want {
					t.Errorf("%d ranks, stage %d: rank %d's weights differ from the in-process workers'", n, stage, r)
				}
			}
		}
	}
}

// newRanksWithOne starts two ranks whose configurations differ only where
// change edits rank's, and returns what NewRank reported on each.
func newRanksWithOne(t *testing.T, rank int, change func(*Config)) []error {
	return collective(t, 2, func(comm Communicator) error {
		cfg := testConfig(2, 4, 1)
		if comm.Rank() == rank {
			change(&cfg)
		}
		tr, err := NewRank(newTestModel(t), comm, cfg)
		if err == nil {
			tr.Close()
		}
		return err
	})
}

func TestConfigMismatchIsDetected(t *testing.T) {
	errs := newRanksWithOne(t, 1, func(cfg *Config) { cfg.ClipNorm = 0.5 })
	for r, err := range errs {
		assert.ErrorIs(t, err, ErrConfigMismatch, "rank %d", r)
	}
}

// waitGoroutines waits for the goroutine count to fall back to base (helper
// goroutines of the kernels are started before base is taken).
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	for range 200 {
		if runtime.NumGoroutine() <= base {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines left, had %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
}

func TestWorkerFailureStopsEveryWorker(t *testing.T) {
	m := newTestModel(t)
	tr, err := New(m, testConfig(3, 6, 1))
	require.NoError(t, err)
	defer tr.Close()
	data := newTestData(t, 3)
	if _, err := tr.Step(context.Background(), data); err != nil { // start the helper pools
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	before := append([]float32(nil), m.Trainable().Data...)
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		hook func(rank, step int) error
		want string
	}{
		{"error", func(rank, step int) error {
			if rank == 1 {
				return boom
			}
			return nil
		}, "rank 1"},
		{"panic", func(rank, step int) error {
			if rank == 2 {
				panic("injected")
			}
			return nil
		}, "rank 2"},
	} {
		tr.testHook = tc.hook
		_, err := tr.Step(context.Background(), data)
		require.ErrorContains(t, err, tc.want, tc.name)
		if tc.name == "error" {
			require.ErrorIs(t, err, boom, "the worker's error")
		}
		waitGoroutines(t, base)
		require.Equal(t, Hash(before), Hash(m.Trainable().Data), "%s: a failed step changed the weights", tc.name)
	}
	// The trainer recovers: the next step runs.
	tr.testHook = nil
	_, err = tr.Step(context.Background(), data)
	require.NoError(t, err, "step after failures")
	waitGoroutines(t, base)
}

// startPools runs a step so that the kernels' and nn's long-lived helper
// goroutines exist before a test counts goroutines.
func startPools(t *testing.T) {
	t.Helper()
	trainShared(t, testConfig(2, 4, 1), 1)
}

func TestRankPanicAbortsGroup(t *testing.T) {
	// One rank of a NewRank group panics: the others must not wait for it.
	startPools(t)
	for _, stage := range []int{0, 3} {
		rankPanic(t, stage)
	}
}

func rankPanic(t *testing.T, stage int) {
	base := runtime.NumGoroutine()
	errs := collective(t, 2, func(comm Communicator) error {
		tr, err := newStageRank(t, comm, stage)
		if err != nil {
			return err
		}
		defer tr.Close()
		tr.testHook = func(rank, step int) error {
			if rank == 0 && step == 2 {
				panic("rank 0 fails")
			}
			return nil
		}
		return tr.Train(context.Background(), newTestData(t, 3), 3, nil)
	})
	assert.ErrorContains(t, errs[0], "rank 0: step 2: panic", "stage %d", stage)
	assert.ErrorIs(t, errs[1], ErrAborted, "stage %d: rank 1", stage)
	waitGoroutines(t, base)
}

func TestContextCancellationStopsBetweenSteps(t *testing.T) {
	m := newTestModel(t)
	tr, err := New(m, testConfig(2, 4, 1))
	require.NoError(t, err)
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	err = tr.Train(ctx, newTestData(t, 3), 10, func(model.StepStats) {
		steps++
		if steps == 2 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 2, tr.StepsDone())
}

func TestBadConfigs(t *testing.T) {
	m := newTestModel(t)
	for _, cfg := range []Config{
		{Workers: 2, Batch: 1, Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW()},
		{Workers: 1, Batch: 4, AdamW: model.DefaultAdamW()},
		{Workers: 1, Batch: 4, Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW(), Stage: 2},
		{Workers: -1, Batch: 4, Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW()},
		{Workers: 1, Batch: 4, SeqLen: 1000, Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW()},
	} {
		tr, err := New(m, cfg)
		if assert.Error(t, err, "config %+v", cfg) {
			continue
		}
		tr.Close()
	}
	_, err := New(nil, testConfig(1, 4, 1))
	assert.Error(t, err, "nil model")
}

func TestMemoryFollowsZeRO(t *testing.T) {
	const psi = 1000
	want := map[int]int64{0: 16 * psi, 1: 8*psi + 8*psi/2, 2: 4*psi + 12*psi/2, 3: 16 * psi / 2}
	for stage, total := range want {
		m, err := ZeROMemory(stage, 2, psi)
		assert.NoError(t, err)
		assert.Equal(t, total, m.Total(), "stage %d: %+v", stage, m)
	}
	_, err := ZeROMemory(4, 2, psi)
	assert.Error(t, err, "stage 4")
	// The trainers' own reports, 2 ranks, between steps.
	psiModel := int64(newTestModel(t).NumParams())
	var totals, allocated, transient [4]int64
	for stage := range 4 {
		reps := make([]MemoryReport, 2)
		errs := collective(t, 2, func(comm Communicator) error {
			r := comm.Rank()
			tr, err := newStageRank(t, comm, stage)
			if err != nil {
				return err
			}
			defer tr.Close()
			// At stage 3, what is resident while a layer computes.
			var peak int64
			var measured bool
			tr.gatherHook = func() {
				if n, ok := residentBytes(tr.release); ok {
					peak, measured = max(peak, n), true
				}
			}
			if _, err := tr.Step(context.Background(), newTestData(t, 3)); err != nil {
				return err
			}
			reps[r] = tr.Memory()
			if stage == 3 {
				if len(tr.layers) != 4*testModelConfig().Layers {
					t.Errorf("rank %d: %d linear layers gather their own weights, want %d", r, len(tr.layers), 4*testModelConfig().Layers)
				}
				// Whole pages: up to two per layer straddle a boundary.
				slack := int64(2 * len(tr.layers) * pageSize())
				if measured && (peak > tr.paramsPeak()+slack || peak >= 4*psiModel) {
					t.Errorf("rank %d: %d B of parameters resident while a layer computes, report says %d B at the peak (whole model %d B)", r, peak, tr.paramsPeak(), 4*psiModel)
				}
				t.Logf("rank %d: parameters resident at most %d B during the step (report: %d B peak, whole model %d B)", r, peak, tr.paramsPeak(), 4*psiModel)
			}
			// What the kernel holds agrees with the report.
			for _, c := range []struct {
				what  string
				rel   *releaser
				claim int64
			}{{"parameters", tr.release, reps[r].Allocated.Params}, {"gradients", tr.gradRelease, reps[r].Allocated.Grads}} {
				if c.rel == nil {
					continue
				}
				got, ok := residentBytes(c.rel)
				switch {
				case !ok && runtime.GOOS == "linux":
					t.Errorf("stage %d, rank %d: %s: no mapping to measure", stage, r, c.what)
				case ok && (got < c.claim || got >= c.claim+int64(pageSize())):
					t.Errorf("stage %d, rank %d: %d B of %s resident, report says %d B", stage, r, got, c.what, c.claim)
				}
			}
			return nil
		})
		for r, err := range errs {
			if err != nil {
				t.Errorf("stage %d, rank %d: %v", stage, r, err)
			}
		}
		if t.Failed() {
			return
		}
		totals[stage] = reps[0].Model.Total()
		allocated[stage] = reps[0].Allocated.Total()
		transient[stage] = reps[0].Transient
		t.Logf("stage %d: model %d B, allocated %+v = %d B, transient %d B", stage, totals[stage], reps[0].Allocated, allocated[stage], reps[0].Transient)
		// Up to stage 2 a step's peak holds every parameter and every
		// gradient; stage 3 gathers one layer's weights at a time.
		if a := reps[0].Allocated; stage < 3 && a.Params+a.Grads+reps[0].Transient != 8*psiModel {
			t.Errorf("stage %d: parameters and gradients allocated %d B + transient %d B, want %d B at the peak", stage, a.Params+a.Grads, reps[0].Transient, 8*psiModel)
		}
	}
	if r := float64(totals[3]) / float64(totals[0]); r > 0.55 {
		t.Errorf("stage 3 holds %.2f× stage 0's memory per rank, want ≤ 0.55", r)
	}
	if runtime.GOOS == "linux" {
		if peak3, peak0 := allocated[3]+transient[3], allocated[0]; peak3 >= peak0*3/4 {
			t.Errorf("stage 3 needs %d B at the peak of a step, stage 0 %d B", peak3, peak0)
		}
		if r := float64(allocated[3]) / float64(allocated[0]); r > 0.55 {
			t.Errorf("stage 3 keeps %.2f× stage 0's memory allocated per rank, want ≤ 0.55", r)
		}
	}
}

func TestNonFiniteLossStopsStepUnchanged(t *testing.T) {
	m := newTestModel(t)
	tr, err := New(m, testConfig(2, 4, 1))
	require.NoError(t, err)
	defer tr.Close()
	// A NaN in the tied embedding poisons every logit: both workers fail.
	m.Trainable().Data[5] = float32(math.NaN())
	before := Hash(m.Trainable().Data)
	_, err = tr.Step(context.Background(), newTestData(t, 3))
	require.ErrorIs(t, err, model.ErrNonFinite)
	require.ErrorContains(t, err, "rank 0")
	require.Equal(t, before, Hash(m.Trainable().Data), "a failed step changed the weights")
	require.Zero(t, tr.StepsDone(), "a failed step counted")
}

func TestRankCancellationStopsEveryRank(t *testing.T) {
	// Only rank 1's context is cancelled, after its second step: rank 0
	// must stop at the same step instead of waiting for rank 1. At stage 3
	// the ranks must agree before the forward pass, whose layers gather
	// their weights.
	for _, stage := range []int{0, 3} {
		rankCancellation(t, stage)
	}
}

func rankCancellation(t *testing.T, stage int) {
	done := make([]int, 2)
	errs := collective(t, 2, func(comm Communicator) error {
		r := comm.Rank()
		tr, err := newStageRank(t, comm, stage)
		if err != nil {
			return err
		}
		defer tr.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err = tr.Train(ctx, newTestData(t, 3), 10, func(st model.StepStats) {
			if r == 1 && st.Step == 2 {
				cancel()
			}
		})
		done[r] = tr.StepsDone()
		return err
	})
	require.ErrorIs(t, errs[1], context.Canceled, "stage %d: rank 1", stage)
	require.ErrorIs(t, errs[0], ErrPeer, "stage %d: rank 0 is stopped by rank 1", stage)
	require.Equal(t, []int{2, 2}, done, "stage %d: steps done", stage)
}

func TestInvalidConfigOnOneRankFailsEveryRank(t *testing.T) {
	errs := newRanksWithOne(t, 0, func(cfg *Config) { cfg.Stage = 7 })
	require.ErrorContains(t, errs[0], "stage 7")
	require.ErrorIs(t, errs[1], ErrConfigMismatch)
	// The same invalid configuration on every rank: the hashes agree, and
	// every rank still refuses it.
	errs = collective(t, 2, func(comm Communicator) error {
		tr, err := newStageRank(t, comm, 7)
		if err == nil {
			tr.Close()
		}
		return err
	})
	for r, err := range errs {
		assert.ErrorContains(t, err, "stage 7", "stage 7 on every rank: rank %d", r)
	}
}
