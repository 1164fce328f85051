package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSumSquares64 checks SumSquares64 against its definition (eight
// interleaved float64 chains, combined pairwise) bit for bit, and against
// a float64 sum, on lengths around the chain count.
func TestSumSquares64(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{0, 1, 7, 8, 9, 15, 17, 1000, 1024, 1031} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*4))
		}
		var chains [8]float64
		var plain, abs float64
		for i, v := range x {
			sq := float64(v) * float64(v)
			chains[i%8] += sq
			plain += sq
			abs += math.Abs(sq)
		}
		// An element past the last whole group of eight adds a zero to the
		// chains it does not reach: +0 changes no sum.
		want := ((chains[0] + chains[1]) + (chains[2] + chains[3])) + ((chains[4] + chains[5]) + (chains[6] + chains[7]))
		got := SumSquares64(x)
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("n=%d: %v, chains give %v", n, got, want)
		}
		if math.Abs(got-plain) > float64(n)*0x1p-52*abs {
			t.Errorf("n=%d: %v, float64 sum %v", n, got, plain)
		}
	}
	if s := SumSquares64([]float32{float32(math.NaN()), 1}); !math.IsNaN(s) {
		t.Errorf("NaN input: %v", s)
	}
	if s := SumSquares64([]float32{float32(math.Inf(-1))}); !math.IsInf(s, 1) {
		t.Errorf("-Inf input: %v", s)
	}
}

// BenchmarkSumSquares64 times a gradient-norm block sum over 1M elements,
// with SumSquares64 and with one float64 chain as the reference.
func BenchmarkSumSquares64(b *testing.B) {
	x := make([]float32, 1<<20)
	for i := range x {
		x[i] = float32(i%31) - 15
	}
	var sink float64
	b.Run("chains=8", func(b *testing.B) {
		b.SetBytes(4 << 20)
		for b.Loop() {
			for i := 0; i < len(x); i += 1024 {
				sink += SumSquares64(x[i : i+1024])
			}
		}
	})
	b.Run("chains=1", func(b *testing.B) {
		b.SetBytes(4 << 20)
		for b.Loop() {
			for i := 0; i < len(x); i += 1024 {
				var s float64
				for _, v := range x[i : i+1024] {
					s += float64(v) * float64(v)
				}
				sink += s
			}
		}
	})
	_ = sink
}
