package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAccCentered compares AccCentered with a float64 reference on every
// implementation, for lengths around the vector width, and checks that no
// element depends on where the slices are cut.
func TestAccCentered(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	forEachImpl(t, "norm", func(t *testing.T) {
		for _, n := range []int{0, 1, 7, 8, 9, 17, 100} {
			dst, a, x := make([]float32, n), make([]float32, n), make([]float32, n)
			for i := range dst {
				dst[i], a[i], x[i] = rng.Float32()*2-1, rng.Float32()*2-1, float32(rng.NormFloat64()*2)
			}
			const mu, rs = 0.3, 1.7
			dst0 := append([]float32(nil), dst...)
			AccCentered(dst, a, x, mu, rs)
			for i := range n {
				want := float64(dst0[i]) + float64(a[i])*(float64(x[i])-mu)*rs
				bound := 1e-6 * (math.Abs(float64(dst0[i])) + math.Abs(float64(a[i])*(float64(x[i])-mu)*rs) + 1e-3)
				if d := math.Abs(float64(dst[i]) - want); d > bound {
					t.Errorf("n=%d: dst[%d] = %g, want %g", n, i, dst[i], want)
				}
			}
			for _, cut := range []int{1, 5, 9} {
				if cut >= n {
					continue
				}
				parts := append([]float32(nil), dst0...)
				AccCentered(parts[:cut], a[:cut], x[:cut], mu, rs)
				AccCentered(parts[cut:], a[cut:], x[cut:], mu, rs)
				for i := range n {
					if math.Float32bits(parts[i]) != math.Float32bits(dst[i]) {
						t.Fatalf("n=%d cut %d: element %d differs from the whole slice's", n, cut, i)
					}
				}
			}
		}
	})
}
