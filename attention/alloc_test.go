package attention

import "testing"

// TestIntoAllocations checks that the Into variants allocate nothing per call
// once their pools are warm: token-by-token generation calls DecodeInto per
// layer per token, and a training step calls ForwardInto and BackwardInto
// per layer. Workers: 1 runs on the caller; with more workers helpers are
// started, which allocate nothing either but may make the runtime grow its
// set of goroutine descriptors now and then, so those are only logged.
func TestIntoAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates inside synchronization")
	}
	cases := []tcase{
		{B: 2, H: 4, KVH: 2, Tq: 64, Tk: 64, D: 32, Causal: true},                        // one item per (batch, kv head)
		{B: 1, H: 4, KVH: 1, Tq: 300, Tk: 300, D: 16, Causal: true, BQ: 48, BK: 64},      // backward splits the key blocks
		{B: 3, H: 2, KVH: 2, Tq: 40, Tk: 40, D: 8, Window: 7, Lengths: []int{40, 17, 0}}, // padded batch
	}
	for _, workers := range []int{1, 2} {
		for _, c := range cases {
			in := c.inputs(1)
			opts := c.opts()
			opts.Workers = workers
			o := NewTensor(c.B, c.H, c.Tq, c.D)
			lse := make([]float32, c.B*c.H*c.Tq)
			dq := NewTensor(c.B, c.H, c.Tq, c.D)
			dk, dv := NewTensor(c.B, c.KVH, c.Tk, c.D), NewTensor(c.B, c.KVH, c.Tk, c.D)
			fwd := testing.AllocsPerRun(20, func() {
				if err := ForwardInto(o, lse, in.q, in.k, in.v, opts); err != nil {
					t.Fatal(err)
				}
			})
			bwd := testing.AllocsPerRun(20, func() {
				if err := BackwardInto(dq, dk, dv, in.q, in.k, in.v, o, lse, in.dO, opts); err != nil {
					t.Fatal(err)
				}
			})
			report(t, workers, c.String()+" ForwardInto", fwd)
			report(t, workers, c.String()+" BackwardInto", bwd)
		}
		for _, c := range []struct {
			tcase
			length int
		}{
			{tcase{B: 1, H: 4, KVH: 2, Tq: 1, Tk: 700, D: 32, Causal: true}, 600},        // three chunks
			{tcase{B: 2, H: 4, KVH: 4, Tq: 2, Tk: 64, D: 16, Causal: true}, 9},           // a few rows, one chunk
			{tcase{B: 2, H: 2, KVH: 1, Tq: 1, Tk: 300, D: 8, Lengths: []int{300, 5}}, 0}, // per-sequence lengths
		} {
			in := c.inputs(1)
			opts := c.opts()
			opts.Workers = workers
			o := NewTensor(c.B, c.H, c.Tq, c.D)
			n := testing.AllocsPerRun(20, func() {
				if err := DecodeInto(o, in.q, in.k, in.v, c.length, opts); err != nil {
					t.Fatal(err)
				}
			})
			report(t, workers, c.String()+" DecodeInto", n)
		}
	}
	// The model decodes with the default workers, which stay on the caller
	// for a short cache.
	c := tcase{B: 2, H: 4, KVH: 2, Tq: 1, Tk: 64, D: 32}
	in := c.inputs(1)
	o := NewTensor(c.B, c.H, c.Tq, c.D)
	n := testing.AllocsPerRun(20, func() {
		if err := DecodeInto(o, in.q, in.k, in.v, 40, Options{Causal: true}); err != nil {
			t.Fatal(err)
		}
	})
	report(t, 0, c.String()+" DecodeInto", n)
}

func report(t *testing.T, workers int, what string, allocs float64) {
	t.Helper()
	switch {
	case allocs == 0:
	case workers <= 1:
		t.Errorf("%s, Workers %d: %v allocations per call, want 0", what, workers, allocs)
	default:
		t.Logf("%s, Workers %d: %v allocations per call", what, workers, allocs)
	}
}
