//go:build amd64 && !purego

package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestImplsAgree runs the two implementations on the same random data and
// compares them directly, beyond each one's agreement with the references.
func TestImplsAgree(t *testing.T) {
	if !vecAVX2 {
		t.Skip("the AVX2 routines are not enabled")
	}
	rng := rand.New(rand.NewPCG(15, 16))
	const n = 4099
	x := make([]float32, n)
	y := make([]float32, n)
	randFill(rng, x, -1, 1)
	randFill(rng, y, -1, 1)
	var abs float64
	for i := range x {
		abs += math.Abs(float64(x[i]) * float64(y[i]))
	}
	if a, g := dotAVX2(x, y), dotGeneric(x, y); math.Abs(float64(a-g)) > 2*n*eps32*abs {
		t.Errorf("Dot: avx2 %v, generic %v", a, g)
	}
	if a, g := sumAVX2(x), sumGeneric(x); math.Abs(float64(a-g)) > 2*n*eps32*n {
		t.Errorf("Sum: avx2 %v, generic %v", a, g)
	}
	if a, g := maxAVX2(x), maxGeneric(x); a != g {
		t.Errorf("Max: avx2 %v, generic %v", a, g)
	}
	ya, yg := append([]float32(nil), y...), append([]float32(nil), y...)
	axpyAVX2(0.37, x, ya)
	axpyGeneric(0.37, x, yg)
	for i := range ya {
		// FMA against separate rounding: at most an ulp of the sum apart,
		// counted against the larger of the terms.
		if math.Abs(float64(ya[i]-yg[i])) > eps32*math.Max(math.Abs(float64(yg[i])), math.Abs(float64(x[i]))) {
			t.Fatalf("Axpy i=%d: avx2 %v, generic %v", i, ya[i], yg[i])
		}
	}
	xa, xg := append([]float32(nil), x...), append([]float32(nil), x...)
	scaleAVX2(-1.7, xa)
	scaleGeneric(-1.7, xg)
	for i := range xa {
		if xa[i] != xg[i] {
			t.Fatalf("Scale i=%d: avx2 %v, generic %v", i, xa[i], xg[i])
		}
	}
	src := make([]float32, n)
	randFill(rng, src, -110, 95)
	src[7], src[100], src[1000] = negInf, inf, nan32
	ea, eg := make([]float32, n), make([]float32, n)
	expAVX2(ea, src)
	expGeneric(eg, src)
	var worst int64
	for i := range ea {
		if ea[i] != ea[i] || eg[i] != eg[i] {
			if ea[i] == ea[i] || eg[i] == eg[i] {
				t.Fatalf("Exp(%v): avx2 %v, generic %v", src[i], ea[i], eg[i])
			}
			continue
		}
		worst = max(worst, ulpDiff(ea[i], eg[i]))
	}
	if worst > expImplsMaxULP {
		t.Errorf("Exp: implementations %d ulp apart, bound %d", worst, expImplsMaxULP)
	}
	sa, sg := expSubSumAVX2(ea, src, 3), expSubSumGeneric(eg, src, 3)
	if sa != sa || sg != sg {
		src[100], src[1000] = 0, 0 // drop +Inf and NaN for the sum
		sa, sg = expSubSumAVX2(ea, src, 3), expSubSumGeneric(eg, src, 3)
	}
	if math.Abs(float64(sa-sg)) > 2*n*eps32*float64(sg) {
		t.Errorf("ExpSubSum: avx2 %v, generic %v", sa, sg)
	}
}
