package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSwiGLU checks SwiGLUForward and SwiGLUGrad against float64 references
// on every implementation, at lengths around the vector widths and with
// gates where the exponential overflows or underflows; that y may alias
// gate; that accumulation adds; and that no element depends on where the
// slice is cut.
func TestSwiGLU(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	forEachImpl(t, "vec", func(t *testing.T) {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 23, 101} {
			g, u, dy := make([]float32, n), make([]float32, n), make([]float32, n)
			for i := range g {
				g[i] = float32(rng.NormFloat64() * 4)
				u[i] = float32(rng.NormFloat64())
				dy[i] = float32(rng.NormFloat64())
			}
			if n > 4 {
				g[0], g[1], g[2], g[3] = 120, -120, 0, -30
			}
			y, s := make([]float32, n), make([]float32, n)
			SwiGLUForward(y, s, g, u)
			dg, du := make([]float32, n), make([]float32, n)
			SwiGLUGrad(dg, du, dy, g, u, s, false)
			dg2, du2 := append([]float32(nil), dg...), append([]float32(nil), du...)
			SwiGLUGrad(dg2, du2, dy, g, u, s, true)
			for i := range n {
				gv, uv, dv := float64(g[i]), float64(u[i]), float64(dy[i])
				sig := 1 / (1 + math.Exp(-gv))
				want := gv * sig * uv
				if d := math.Abs(float64(y[i]) - want); d > 1e-6*math.Abs(want)+1e-30 {
					t.Errorf("n=%d: SwiGLU(%g, %g) = %g, want %g", n, g[i], u[i], y[i], want)
				}
				if d := math.Abs(float64(s[i]) - sig); d > 1e-6*sig+1e-30 {
					t.Errorf("n=%d: σ(%g) = %g, want %g", n, g[i], s[i], sig)
				}
				// The gradients from the float32 sigmoid, which is what they
				// are given.
				sf := float64(s[i])
				wantDG := dv * uv * sf * (1 + gv*(1-sf))
				wantDU := dv * gv * sf
				if d := math.Abs(float64(dg[i]) - wantDG); d > 1e-5*math.Abs(wantDG)+1e-30 {
					t.Errorf("n=%d: dgate(%g) = %g, want %g", n, g[i], dg[i], wantDG)
				}
				if d := math.Abs(float64(du[i]) - wantDU); d > 1e-6*math.Abs(wantDU)+1e-30 {
					t.Errorf("n=%d: dup(%g) = %g, want %g", n, g[i], du[i], wantDU)
				}
				if dg2[i] != dg[i]+dg[i] || du2[i] != du[i]+du[i] {
					t.Errorf("n=%d: accumulated gradients at %d: %g, %g from %g, %g", n, i, dg2[i], du2[i], dg[i], du[i])
				}
			}
			alias := append([]float32(nil), g...)
			s2 := make([]float32, n)
			SwiGLUForward(alias, s2, alias, u)
			for i := range n {
				if alias[i] != y[i] || s2[i] != s[i] {
					t.Fatalf("n=%d: aliased y differs at %d", n, i)
				}
			}
			onlyUp := make([]float32, n)
			SwiGLUGrad(nil, onlyUp, dy, g, nil, s, false)
			for i := range n {
				if onlyUp[i] != du[i] {
					t.Fatalf("n=%d: dup alone differs at %d", n, i)
				}
			}
			for _, cut := range []int{1, 5, 9} {
				if cut >= n {
					continue
				}
				yp, sp, dgp, dup := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
				for _, r := range [][2]int{{0, cut}, {cut, n}} {
					a, b := r[0], r[1]
					SwiGLUForward(yp[a:b], sp[a:b], g[a:b], u[a:b])
					SwiGLUGrad(dgp[a:b], dup[a:b], dy[a:b], g[a:b], u[a:b], sp[a:b], false)
				}
				for i := range n {
					if math.Float32bits(yp[i]) != math.Float32bits(y[i]) || math.Float32bits(sp[i]) != math.Float32bits(s[i]) ||
						math.Float32bits(dgp[i]) != math.Float32bits(dg[i]) || math.Float32bits(dup[i]) != math.Float32bits(du[i]) {
						t.Fatalf("n=%d cut %d: element %d differs from the whole slice's", n, cut, i)
					}
				}
			}
		}
	})
}

func BenchmarkSwiGLU(b *testing.B) {
	const n = 1 << 16
	rng := rand.New(rand.NewPCG(1, 2))
	g, u, dy := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range g {
		g[i], u[i], dy[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	y, s, dg, du := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	forEachImplB(b, "vec", func(b *testing.B) {
		b.Run("forward", func(b *testing.B) {
			b.SetBytes(16 * n)
			for b.Loop() {
				SwiGLUForward(y, s, g, u)
			}
		})
		b.Run("grad", func(b *testing.B) {
			b.SetBytes(40 * n)
			for b.Loop() {
				SwiGLUGrad(dg, du, dy, g, u, s, false)
			}
		})
	})
}
