package parallel

import (
	"testing"

	"github.com/galleon-ml/galleon/model"
)

func withDropout(c *model.Config) { c.Dropout = 0.1 }

// Gradient checkpointing changes nothing in data-parallel training: two
// in-process workers (also in exact mode, one sample per run) and two
// ranks at ZeRO stages 0 and 3 (whose layers gather their weights again
// when their block is recomputed) end with the weights of the run without
// it, bit for bit.
func TestGradCheckpointingWorkers(t *testing.T) {
	const steps = 3
	cfg := testConfig(2, 6, 2)
	cfg.Schedule.Warmup = 1
	want := trainShared(t, cfg, steps, withDropout)
	ck := cfg
	ck.GradCheckpointing = true
	got := trainShared(t, ck, steps, withDropout)
	if Hash(got.weights) != Hash(want.weights) {
		t.Fatalf("2 workers: weights differ with checkpointing (max rel diff %g)", maxRelDiff(got.weights, want.weights, 1e-6))
	}
	for i := range want.losses {
		if got.losses[i] != want.losses[i] {
			t.Fatalf("step %d: loss %v with checkpointing, %v without", i+1, got.losses[i], want.losses[i])
		}
	}
	ex, exCk := cfg, ck
	ex.Exact, exCk.Exact = true, true
	if Hash(trainShared(t, exCk, steps, withDropout).weights) != Hash(trainShared(t, ex, steps, withDropout).weights) {
		t.Fatal("2 workers, exact mode: weights differ with checkpointing")
	}
	stages := []int{0, 3}
	if testing.Short() {
		stages = stages[1:]
	}
	plain := Hash(trainShared(t, cfg, steps).weights)
	for _, stage := range stages {
		c := ck
		c.Stage = stage
		for r, w := range trainRanks(t, c, 2, steps) {
			if Hash(w) != plain {
				t.Errorf("stage %d: rank %d's weights with checkpointing differ from the in-process workers' without", stage, r)
			}
		}
	}
}
