package model

import (
	"context"
	"math/rand/v2"
	"testing"
)

// A training step's allocations stay bounded and do not grow with the
// sequence length: the fused ops, the flash kernels and the gradient
// buffers reuse their memory, so what remains is gorgonia's bookkeeping on
// the tape, a few allocations per graph node. Measured: 468 per step for
// this 2-layer model (106 graph nodes; 76 + 196 per layer), at any T. The
// bound leaves about 15% headroom; a per-row allocation, or a new buffer in
// every node, fails here.
func TestAllocationsPerStep(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates inside synchronization")
	}
	const bound = 540
	m := testModel(t, nil) // 2 layers, SeqLen 37
	allocs := func(T int) float64 {
		cfg := testTrainConfig()
		cfg.SeqLen = T
		tr, err := NewTrainer(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		data := randomBatches{r: rand.New(rand.NewPCG(1, 1))}
		ctx := context.Background()
		for range 3 { // warm the pools
			if _, err := tr.Step(ctx, data); err != nil {
				t.Fatal(err)
			}
		}
		return testing.AllocsPerRun(5, func() {
			if _, err := tr.Step(ctx, data); err != nil {
				t.Fatal(err)
			}
		})
	}
	long, short := allocs(37), allocs(16)
	t.Logf("%v allocations per step at T=37, %v at T=16", long, short)
	if long > bound {
		t.Errorf("%v allocations per training step, want at most %d", long, bound)
	}
	// A pool emptied by a collection during the run can cost one or two
	// allocations; growth with T would show as many more.
	if long > short+4 {
		t.Errorf("allocations grow with the sequence length: %v at T=16, %v at T=37", short, long)
	}
}
