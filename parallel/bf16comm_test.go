package parallel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/model"
)

// bf16Inputs returns rank q's buffer of n values spread over several
// binades, with signs, so that sums cancel and round.
func bf16Inputs(q, n int) []float32 {
	rng := rand.New(rand.NewPCG(uint64(q)+1, 99))
	b := make([]float32, n)
	for i := range b {
		b[i] = float32((rng.Float64()*2 - 1) * math.Pow(2, float64(rng.IntN(20)-10)))
	}
	return b
}

// bf16Reference is the float64 sum over ranks of the bfloat16-rounded
// inputs.
func bf16Reference(n, size int) []float64 {
	ref := make([]float64, size)
	for q := range n {
		for i, x := range bf16Inputs(q, size) {
			ref[i] += float64(kernels.RoundBF16(x))
		}
	}
	return ref
}

// checkBF16Sum holds got against the float64 sum of the bfloat16 inputs: a
// float32 sum of n terms, rounded once to bfloat16, is within half a
// bfloat16 ulp of the value (≤ 2⁻⁸ relative: 7 stored mantissa bits) plus the float32 rounding of
// the additions (≤ n·2⁻²⁴ of the sum of magnitudes).
func checkBF16Sum(got []float32, ref []float64, n, lo, hi int) error {
	abs := make([]float64, len(ref))
	for q := range n {
		for i, x := range bf16Inputs(q, len(ref)) {
			abs[i] += math.Abs(float64(x))
		}
	}
	for i := lo; i < hi; i++ {
		if got[i] != kernels.RoundBF16(got[i]) {
			return fmt.Errorf("[%d] = %v is not a bfloat16 value", i, got[i])
		}
		bound := math.Ldexp(math.Abs(ref[i]), -8) + float64(n)*math.Ldexp(abs[i], -24)
		if d := math.Abs(float64(got[i]) - ref[i]); d > bound {
			return fmt.Errorf("[%d] = %v, float64 reference %v: off by %g > %g", i, got[i], ref[i], d, bound)
		}
	}
	return nil
}

func TestBF16CollectivesReduceInFloat32(t *testing.T) {
	for _, n := range []int{1, 2, 3, 8} {
		const size = 1500 // more than one block of sumBF16Into, odd parts
		ref := bf16Reference(n, size)
		counts := evenCounts(size, n)
		counts[0] += counts[n-1] // uneven parts, one possibly empty
		counts[n-1] = 0
		if n == 1 {
			counts = []int{size}
		}
		offs, _ := checkCounts("test", counts, n, size)
		results := make([][]float32, n)
		errs := collective(t, n, func(c Communicator) error {
			bc := c.(BF16Communicator)
			r := c.Rank()
			b := bf16Inputs(r, size)
			if err := bc.ReduceScatterBF16(b, counts); err != nil {
				return err
			}
			// Check after the last collective, so that a failing rank
			// leaves no other waiting.
			rsErr := checkBF16Sum(b, ref, n, offs[r], offs[r+1])
			if err := bc.AllGatherBF16(b, counts); err != nil {
				return err
			}
			if rsErr != nil {
				return fmt.Errorf("reduce-scatter: %w", rsErr)
			}
			if err := checkBF16Sum(b, ref, n, 0, size); err != nil {
				return fmt.Errorf("after all-gather: %w", err)
			}
			results[r] = b
			return nil
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("%d ranks: rank %d: %v", n, r, err)
			}
		}
		for r := range n {
			if Hash(results[r]) != Hash(results[0]) {
				t.Errorf("%d ranks: rank %d's reduced gradient differs from rank 0's", n, r)
			}
		}
	}
}

// The sum is float32, not bfloat16: 1 + 7 × 2⁻⁸ accumulated in bfloat16
// stays 1 (each 1 + 2⁻⁸ is a tie that rounds to even), while the float32
// sum 1.02734375 rounds once to 1.03125.
func TestBF16ReductionAccumulatesInFloat32(t *testing.T) {
	const n = 8
	results := make([]float32, n)
	errs := collective(t, n, func(c Communicator) error {
		b := []float32{float32(math.Ldexp(1, -8))}
		if c.Rank() == 0 {
			b[0] = 1
		}
		if err := c.(BF16Communicator).ReduceScatterBF16(b, append(make([]int, n-1), 1)); err != nil {
			return err
		}
		results[c.Rank()] = b[0]
		return nil
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	if got := results[n-1]; got != 1.03125 {
		t.Errorf("sum = %v, want 1.03125 (a float32 sum rounded once)", got)
	}
}

// bf16WireBytes runs a reduce-scatter and an all-gather in each precision
// on n ranks and returns every rank's bytes sent by each.
func bf16WireBytes(t *testing.T, n, size int) (fp32, bf16 []int64) {
	fp32, bf16 = make([]int64, n), make([]int64, n)
	counts := evenCounts(size, n)
	errs := collective(t, n, func(c Communicator) error {
		r := c.Rank()
		wc := c.(WireCounter)
		b := bf16Inputs(r, size)
		if err := c.ReduceScatter(b, counts); err != nil {
			return err
		}
		if err := c.AllGather(b, counts); err != nil {
			return err
		}
		fp32[r] = wc.BytesSent()
		bc := c.(BF16Communicator)
		if err := bc.ReduceScatterBF16(b, counts); err != nil {
			return err
		}
		if err := bc.AllGatherBF16(b, counts); err != nil {
			return err
		}
		bf16[r] = wc.BytesSent() - fp32[r]
		return nil
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	return fp32, bf16
}

func TestBF16CollectivesHalveBytes(t *testing.T) {
	const n, size = 3, 1001
	fp32, bf16 := bf16WireBytes(t, n, size)
	counts := evenCounts(size, n)
	for r := range n {
		// Reduce-scatter: the other ranks' parts; all-gather: own part to
		// each other rank.
		want := int64(4 * (size - counts[r] + counts[r]*(n-1)))
		if fp32[r] != want || 2*bf16[r] != fp32[r] {
			t.Errorf("rank %d: %d bytes sent in float32 (want %d), %d in bfloat16 (want half)", r, fp32[r], want, bf16[r])
		}
	}
}

// bf16Config is testConfig with bfloat16 gradient communication.
func bf16Config(n int) Config {
	cfg := testConfig(n, 10, 2)
	cfg.CommPrecision = model.PrecisionBF16
	return cfg
}

func TestBF16CommStagesMatchSharedWorkers(t *testing.T) {
	const steps, n = 3, 2
	cfg := bf16Config(n)
	ref := trainShared(t, cfg, steps)
	want := Hash(ref.weights)
	for stage := range 4 {
		c := cfg
		c.Stage = stage
		for r, w := range trainRanks(t, c, n, steps) {
			if Hash(w) != want {
				t.Errorf("bf16 comm, stage %d: rank %d's weights differ from the in-process workers' (max rel diff %g)", stage, r, maxRelDiff(w, ref.weights, 1e-7))
			}
		}
	}
	if Hash(trainShared(t, testConfig(n, 10, 2), steps).weights) == want {
		t.Error("bf16 communication changed nothing")
	}
	if a, b := trainShared(t, cfg, steps), ref; Hash(a.weights) != Hash(b.weights) {
		t.Error("two identical bf16 runs differ")
	}
}

func TestBF16CommExactIsBitIdenticalForAnyWorkerCount(t *testing.T) {
	cfg := testConfig(1, 10, 2)
	cfg.Exact = true
	cfg.CommPrecision = model.PrecisionBF16
	ref := trainShared(t, cfg, 3)
	for _, n := range []int{2, 3} {
		cfg.Workers = n
		if got := trainShared(t, cfg, 3); Hash(got.weights) != Hash(ref.weights) {
			t.Errorf("exact, bf16, workers=%d: weights differ from 1 worker (max rel diff %g)", n, maxRelDiff(got.weights, ref.weights, 1e-7))
		}
	}
	fp := testConfig(3, 10, 2)
	fp.Exact = true
	f := trainShared(t, fp, 1)
	cfg.Workers = 3
	b := trainShared(t, cfg, 1)
	if Hash(f.grads) == Hash(b.grads) {
		t.Error("exact: bf16 gradients equal float32 ones")
	}
	checkClose(t, "exact: bf16 vs float32 reduced gradient", b.grads, f.grads, 1e-2, 1e-3*maxAbs(f.grads))
}

// Training with bfloat16 gradient communication follows float32
// communication: over 30 steps of the test model, every step's loss is
// within 1% of the float32 run's.
func TestBF16CommTracksFP32(t *testing.T) {
	steps := 30
	if testing.Short() {
		steps = 12
	}
	cfg := testConfig(2, 8, 1)
	cfg.Schedule.Total = steps
	fp := trainShared(t, cfg, steps)
	cfg.CommPrecision = model.PrecisionBF16
	bf := trainShared(t, cfg, steps)
	for i := range fp.losses {
		if d := math.Abs(bf.losses[i] - fp.losses[i]); d > 0.01*fp.losses[i] {
			t.Errorf("step %d: loss %v with bf16 communication, %v with fp32", i+1, bf.losses[i], fp.losses[i])
		}
	}
	if !(fp.losses[steps-1] < 0.9*fp.losses[0]) {
		t.Errorf("fp32 losses %v do not fall", fp.losses)
	}
	t.Logf("final loss: fp32 %.5f, bf16 %.5f", fp.losses[steps-1], bf.losses[steps-1])
}

// A trainer step with bf16 communication sends half the gradient bytes of
// a float32 step, counted by the transport; the rest (status, norm,
// parameters) is the same in both.
func TestBF16CommHalvesTrainerBytes(t *testing.T) {
	for stage := range 4 {
		var sent [2][]int64
		grad16 := make([]int64, 2) // the bf16 gradient bytes of a step
		for i, p := range []model.Precision{model.PrecisionFP32, model.PrecisionBF16} {
			cfg := testConfig(2, 4, 1)
			cfg.Stage, cfg.CommPrecision = stage, p
			sent[i] = make([]int64, 2)
			errs := collective(t, 2, func(comm Communicator) error {
				r := comm.Rank()
				tr, err := NewRank(newTestModel(t), comm, cfg)
				if err != nil {
					return err
				}
				defer tr.Close()
				before := tr.BytesSent()
				if _, err := tr.Step(context.Background(), newTestData(t, 3)); err != nil {
					return err
				}
				sent[i][r] = tr.BytesSent() - before
				grad16[r] = 0
				for _, b := range tr.buckets {
					if stage == 0 {
						counts := evenCounts(b.len(), 2)
						grad16[r] += reduceScatterBytes(counts, r, 2) + allGatherBytes(counts, r, 2)
					} else {
						grad16[r] += reduceScatterBytes(intersectCounts(b, tr.shards), r, 2)
					}
				}
				return nil
			})
			for r, err := range errs {
				if err != nil {
					t.Fatalf("stage %d, %v: rank %d: %v", stage, p, r, err)
				}
			}
		}
		for r := range 2 {
			fp, bf := sent[0][r], sent[1][r]
			if fp-bf != grad16[r] || grad16[r] == 0 {
				t.Errorf("stage %d, rank %d: %d bytes per step in fp32, %d in bf16: saved %d, want the bf16 gradient bytes %d", stage, r, fp, bf, fp-bf, grad16[r])
			}
			t.Logf("stage %d, rank %d: %d bytes per step in fp32, %d in bf16 (gradients %d → %d)", stage, r, fp, bf, 2*grad16[r], grad16[r])
		}
	}
}

// plainComm hides the bfloat16 collectives of a communicator.
type plainComm struct{ Communicator }

func TestBF16CommConfigErrors(t *testing.T) {
	cfg := testConfig(1, 4, 1)
	cfg.CommPrecision = 7
	if _, err := New(newTestModel(t), cfg); err == nil || !strings.Contains(err.Error(), "communication precision") {
		t.Errorf("precision 7: %v", err)
	}
	errs := collective(t, 2, func(comm Communicator) error {
		cfg := testConfig(2, 4, 1)
		cfg.CommPrecision = model.PrecisionBF16
		tr, err := NewRank(newTestModel(t), plainComm{comm}, cfg)
		if err == nil {
			tr.Close()
			return errors.New("accepted")
		}
		if !strings.Contains(err.Error(), "BF16Communicator") {
			return err
		}
		return nil
	})
	for r, err := range errs {
		if err != nil {
			t.Errorf("bf16 over a communicator without bf16 collectives: rank %d: %v", r, err)
		}
	}
	// Ranks that disagree on the precision would reduce different formats.
	for r, err := range newRanksWithOne(t, 1, func(cfg *Config) { cfg.CommPrecision = model.PrecisionBF16 }) {
		if !errors.Is(err, ErrConfigMismatch) {
			t.Errorf("bf16 on rank 1 only: rank %d: error %v, want ErrConfigMismatch", r, err)
		}
	}
	// The deprecated names are model.Precision's: old code keeps working.
	for s, want := range map[string]CommPrecision{"fp32": CommFP32, "float32": CommFP32, "bf16": CommBF16, "bfloat16": CommBF16} {
		if p, err := ParseCommPrecision(s); p != want || err != nil {
			t.Errorf("ParseCommPrecision(%q) = %v, %v", s, p, err)
		}
	}
	if CommBF16 != model.PrecisionBF16 || CommFP32 != model.PrecisionFP32 || CommBF16.String() != "bf16" {
		t.Error("CommFP32 and CommBF16 are not model.PrecisionFP32 and PrecisionBF16")
	}
	var old Config
	old.CommPrecision = CommBF16 // a field of type model.Precision takes the alias
	if old.CommPrecision != model.PrecisionBF16 {
		t.Error("the alias does not set the field")
	}
	if _, err := ParseCommPrecision("fp16"); err == nil {
		t.Error("fp16 accepted")
	}
}
