package main

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"github.com/galleon-ml/galleon/attention"
)

// attentionResult compares one causal forward and backward pass of flash and
// materialized attention on the same inputs.
type attentionResult struct {
	T          int     `json:"T"`
	Heads      int     `json:"heads"`
	HeadDim    int     `json:"head_dim"`
	NaiveMS    float64 `json:"naive_ms"`
	FlashMS    float64 `json:"flash_ms"`
	Speedup    float64 `json:"speedup"`
	NaiveBytes uint64  `json:"naive_alloc_bytes"` // heap allocated by one pass, outputs excluded
	FlashBytes uint64  `json:"flash_alloc_bytes"`
	MaxAbsDiff float64 `json:"max_abs_diff_dq"`
}

// compareAttention times a causal forward+backward at T tokens with the
// tiny preset's head shape, and measures what each kernel allocates per pass
// (the outputs are preallocated, so that is its scratch: the T×T score
// matrices for the naive kernel).
func compareAttention(r *attentionResult, T int) error {
	const heads, dim, reps = 4, 32, 3
	*r = attentionResult{T: T, Heads: heads, HeadDim: dim}
	rng := rand.New(rand.NewPCG(7, 11))
	input := func() attention.Tensor {
		x := attention.NewTensor(1, heads, T, dim)
		for i := range x.Data {
			x.Data[i] = float32(rng.NormFloat64())
		}
		return x
	}
	q, k, v, dO := input(), input(), input(), input()
	opts := attention.Options{Causal: true}
	type buffers struct {
		o, dq, dk, dv attention.Tensor
		lse           []float32
	}
	newBuffers := func() *buffers {
		return &buffers{attention.NewTensor(1, heads, T, dim), attention.NewTensor(1, heads, T, dim),
			attention.NewTensor(1, heads, T, dim), attention.NewTensor(1, heads, T, dim), make([]float32, heads*T)}
	}
	pass := func(b *buffers, naive bool) error {
		if naive {
			if err := attention.NaiveForwardInto(b.o, b.lse, q, k, v, opts); err != nil {
				return err
			}
			return attention.NaiveBackwardInto(b.dq, b.dk, b.dv, q, k, v, b.o, b.lse, dO, opts)
		}
		if err := attention.ForwardInto(b.o, b.lse, q, k, v, opts); err != nil {
			return err
		}
		return attention.BackwardInto(b.dq, b.dk, b.dv, q, k, v, b.o, b.lse, dO, opts)
	}
	measure := func(b *buffers, naive bool) (ms float64, alloc uint64, err error) {
		if err := pass(b, naive); err != nil { // warm-up: pools, pages
			return 0, 0, err
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := pass(b, naive); err != nil {
			return 0, 0, err
		}
		runtime.ReadMemStats(&after)
		var times []float64
		for range reps {
			t0 := time.Now()
			if err := pass(b, naive); err != nil {
				return 0, 0, err
			}
			times = append(times, float64(time.Since(t0).Microseconds())/1000)
		}
		slices.Sort(times)
		return times[len(times)/2], after.TotalAlloc - before.TotalAlloc, nil
	}
	naive, flash := newBuffers(), newBuffers()
	var err error
	if r.NaiveMS, r.NaiveBytes, err = measure(naive, true); err != nil {
		return err
	}
	if r.FlashMS, r.FlashBytes, err = measure(flash, false); err != nil {
		return err
	}
	r.Speedup = r.NaiveMS / r.FlashMS
	for i, x := range flash.dq.Data {
		r.MaxAbsDiff = math.Max(r.MaxAbsDiff, math.Abs(float64(x-naive.dq.Data[i])))
	}
	return nil
}
