package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAdamW checks every implementation bit for bit against the update
// written out step by step, and against a float64 evaluation of the same
// formula, at odd lengths (vector blocks, single vectors and tails).
func TestAdamW(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		k := AdamWParams{
			GradScale: 0.625, Decay: 1 - 1e-3*0.1,
			Beta1: 0.9, OneMinusBeta1: 1 - float32(0.9), Beta2: 0.95, OneMinusBeta2: 1 - float32(0.95),
			StepSize: float32(1e-3 / (1 - math.Pow(0.9, 3))), InvBC2Sqrt: float32(1 / math.Sqrt(1-math.Pow(0.95, 3))), Eps: 1e-8,
		}
		for _, n := range []int{0, 1, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1003} {
			p, g, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
			for i := range p {
				p[i] = float32(rng.NormFloat64())
				g[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(9)-6)))
				m[i] = float32(rng.NormFloat64() * 0.01)
				v[i] = float32(rng.Float64() * 1e-4)
			}
			if n > 3 {
				g[3] = 0 // a parameter without gradient
				v[3] = 0
			}
			wp, wm, wv := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
			g0 := append([]float32(nil), g...)
			AdamW(p, g, m, v, &k)
			for i := range wp {
				gi := g0[i] * k.GradScale
				pi := wp[i] * k.Decay
				b1m := k.Beta1 * wm[i]
				c1g := k.OneMinusBeta1 * gi
				mi := b1m + c1g
				b2v := k.Beta2 * wv[i]
				c2g := k.OneMinusBeta2 * gi
				c2gg := c2g * gi
				vi := b2v + c2gg
				sq := float32(math.Sqrt(float64(vi)))
				sqi := sq * k.InvBC2Sqrt
				denom := sqi + k.Eps
				num := k.StepSize * mi
				upd := num / denom
				want := pi - upd
				if math.Float32bits(p[i]) != math.Float32bits(want) || m[i] != mi || v[i] != vi {
					t.Fatalf("n=%d i=%d: p %v m %v v %v, want %v %v %v", n, i, p[i], m[i], v[i], want, mi, vi)
				}
				// float64 evaluation: agreement to a few ulps of the update.
				g64 := float64(g0[i]) * float64(k.GradScale)
				m64 := float64(k.Beta1)*float64(wm[i]) + float64(k.OneMinusBeta1)*g64
				v64 := float64(k.Beta2)*float64(wv[i]) + float64(k.OneMinusBeta2)*g64*g64
				p64 := float64(wp[i])*float64(k.Decay) - float64(k.StepSize)*m64/(math.Sqrt(v64)*float64(k.InvBC2Sqrt)+float64(k.Eps))
				if d := math.Abs(float64(p[i]) - p64); d > 1e-6*math.Max(1, math.Abs(p64)) {
					t.Fatalf("n=%d i=%d: p %v, float64 %v", n, i, p[i], p64)
				}
				if g[i] != g0[i] {
					t.Fatalf("n=%d i=%d: AdamW changed the gradient", n, i)
				}
			}
		}
	})
}

func BenchmarkAdamW(b *testing.B) {
	const n = 1 << 20
	p, g, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range p {
		g[i] = float32(i%13) - 6
	}
	k := AdamWParams{GradScale: 1, Decay: 1, Beta1: 0.9, OneMinusBeta1: 0.1, Beta2: 0.95, OneMinusBeta2: 0.05, StepSize: 1e-3, InvBC2Sqrt: 1, Eps: 1e-8}
	forEachImplB(b, "vec", func(b *testing.B) {
		b.SetBytes(7 * 4 * n) // four streams read, three written
		for b.Loop() {
			AdamW(p, g, m, v, &k)
		}
	})
}
