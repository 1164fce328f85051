package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestGELUGrad compares GELUGrad with the derivative evaluated in float64,
// on every implementation, for lengths around the vector widths, setting
// and accumulating, with dx's neighbours untouched.
func TestGELUGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	forEachImpl(t, "gelu", func(t *testing.T) {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 33, 1000} {
			for _, acc := range []bool{false, true} {
				x, dy, s := make([]float32, n), make([]float32, n), make([]float32, n)
				for i := range x {
					x[i] = float32(rng.NormFloat64() * 3)
					dy[i] = rng.Float32()*2 - 1
					u := 0.7978845608028654 * (float64(x[i]) + 0.044715*math.Pow(float64(x[i]), 3))
					s[i] = float32(1 / (1 + math.Exp(-2*u)))
				}
				dx := make([]float32, n+2) // one guard each side
				for i := range dx {
					dx[i] = rng.Float32()
				}
				dx0 := append([]float32(nil), dx...)
				GELUGrad(dx[1:n+1], dy, x, s, acc)
				if dx[0] != dx0[0] || dx[n+1] != dx0[n+1] {
					t.Fatalf("n=%d: GELUGrad wrote outside dx", n)
				}
				for i := range n {
					v, sg := float64(x[i]), float64(s[i])
					g := sg + v*sg*(1-sg)*2*0.7978845608028654*(1+3*0.044715*v*v)
					want := float64(dy[i]) * g
					if acc {
						want += float64(dx0[i+1])
					}
					// A few roundings of terms bounded by |dy|·(|s| + |x·s·(1−s)|·c2·(1 + k3·x²)).
					bound := 1e-6 * (math.Abs(float64(dy[i]))*(math.Abs(sg)+math.Abs(v*sg*(1-sg))*1.6*(1+0.14*v*v)) + math.Abs(float64(dx0[i+1])))
					if got := float64(dx[i+1]); math.Abs(got-want) > bound {
						t.Errorf("n=%d acc=%v: dx[%d] = %g, want %g ± %.2g", n, acc, i, got, want, bound)
					}
				}
			}
		}
	})
}

func BenchmarkGELUGrad(b *testing.B) {
	const n = 1 << 16
	x, dy, s, dx := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range x {
		x[i], dy[i], s[i] = float32(i%7)-3, 0.5, 0.3
	}
	ForEach("gelu", func(name string) bool {
		return b.Run(fmt.Sprintf("n=%d/%s", n, name), func(b *testing.B) {
			b.SetBytes(4 * 4 * n)
			for b.Loop() {
				GELUGrad(dx, dy, x, s, true)
			}
		})
	})
}

// TestGELUGradSplit checks that an element's result does not depend on
// where the slice is cut: the parallel GELU backward splits it anywhere and
// must match the serial one bit for bit.
func TestGELUGradSplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	forEachImpl(t, "gelu", func(t *testing.T) {
		const n = 101
		x, dy, s := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range x {
			x[i], dy[i], s[i] = float32(rng.NormFloat64()*3), rng.Float32()*2-1, rng.Float32()
		}
		whole := make([]float32, n)
		GELUGrad(whole, dy, x, s, false)
		for _, cut := range []int{1, 5, 16, 37, 100} {
			parts := make([]float32, n)
			GELUGrad(parts[:cut], dy[:cut], x[:cut], s[:cut], false)
			GELUGrad(parts[cut:], dy[cut:], x[cut:], s[cut:], false)
			for i := range n {
				if math.Float32bits(parts[i]) != math.Float32bits(whole[i]) {
					t.Fatalf("cut %d: element %d = %g, whole slice gives %g", cut, i, parts[i], whole[i])
				}
			}
		}
	})
}

// TestGELUForward compares GELUForward with GELU's tanh form in float64 on
// every implementation, including arguments where the exponential
// overflows or underflows, checks that y may alias x, and that no element
// depends on where the slice is cut.
func TestGELUForward(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	forEachImpl(t, "gelu", func(t *testing.T) {
		for _, n := range []int{0, 1, 7, 8, 9, 16, 17, 101} {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * 4)
			}
			if n > 3 {
				x[0], x[1], x[2] = 60, -60, 0
			}
			y, s := make([]float32, n), make([]float32, n)
			GELUForward(y, s, x)
			for i, v := range x {
				xv := float64(v)
				u := 0.7978845608028654 * (xv + 0.044715*xv*xv*xv)
				want := 0.5 * xv * (1 + math.Tanh(u))
				wantS := 1 / (1 + math.Exp(-2*u))
				if d := math.Abs(float64(y[i]) - want); d > 1e-6*math.Abs(xv)+1e-30 {
					t.Errorf("n=%d: GELU(%g) = %g, want %g", n, v, y[i], want)
				}
				if d := math.Abs(float64(s[i]) - wantS); d > 1e-6 {
					t.Errorf("n=%d: s(%g) = %g, want %g", n, v, s[i], wantS)
				}
			}
			alias := append([]float32(nil), x...)
			s2 := make([]float32, n)
			GELUForward(alias, s2, alias)
			for i := range n {
				if alias[i] != y[i] || s2[i] != s[i] {
					t.Fatalf("n=%d: aliased y differs at %d", n, i)
				}
			}
			for _, cut := range []int{1, 5, 9} {
				if cut >= n {
					continue
				}
				yp, sp := make([]float32, n), make([]float32, n)
				GELUForward(yp[:cut], sp[:cut], x[:cut])
				GELUForward(yp[cut:], sp[cut:], x[cut:])
				for i := range n {
					if math.Float32bits(yp[i]) != math.Float32bits(y[i]) || math.Float32bits(sp[i]) != math.Float32bits(s[i]) {
						t.Fatalf("n=%d cut %d: element %d differs from the whole slice's", n, cut, i)
					}
				}
			}
		}
	})
}

func BenchmarkGELUForward(b *testing.B) {
	const n = 1 << 16
	x, y, s := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range x {
		x[i] = float32(i%13) - 6
	}
	ForEach("gelu", func(name string) bool {
		return b.Run(fmt.Sprintf("n=%d/%s", n, name), func(b *testing.B) {
			b.SetBytes(3 * 4 * n)
			for b.Loop() {
				GELUForward(y, s, x)
			}
		})
	})
}
