package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// lowRankCase is one shape of the low-rank tests: rank r, rows rows of X
// of n elements stored with stride ld, a mask from bit lo (or none).
type lowRankCase struct {
	r, rows, n, ld, lo int
	masked             bool
}

func (c lowRankCase) String() string {
	return fmt.Sprintf("r=%d rows=%d n=%d ld=%d lo=%d masked=%t", c.r, c.rows, c.n, c.ld, c.lo, c.masked)
}

// lowRankCases covers ranks 1–8, widths on and off the kernels' 16-element
// steps, strides wider than the rows, row counts off the items' blocks,
// and masks on and off 16-bit words.
func lowRankCases() []lowRankCase {
	var cs []lowRankCase
	// Fewer shapes in short mode, where the race detector's CI run took
	// the low-rank tests from about 10 to 40 s.
	ranks, rowCounts := []int{1, 3, 8}, []int{1, 5, 67, 130}
	if testing.Short() {
		ranks, rowCounts = []int{3, 8}, []int{5, 67}
	}
	for _, r := range ranks {
		for _, rows := range rowCounts {
			for _, n := range []int{16, 41, 48, 96} {
				for _, pad := range []int{0, 16, 3} {
					for _, lo := range []int{0, 16, 5} {
						for _, masked := range []bool{false, true} {
							if !masked && lo != 0 {
								continue
							}
							cs = append(cs, lowRankCase{r, rows, n, n + pad, lo, masked})
						}
					}
				}
			}
		}
	}
	// Shapes of a SmolLM2-135M adapter (B·T = 1,024 rows); fewer rows in
	// short mode, still several items of the products' loops, on several
	// workers.
	rows := 1100
	if testing.Short() {
		rows = 300
	}
	return append(cs, lowRankCase{8, rows, 576, 576, 0, true}, lowRankCase{4, rows, 192, 192, 64, true}, lowRankCase{8, 300, 1536, 1536, 0, false})
}

// lowRankData returns a random rows×ld matrix with a NaN or an infinity
// here and there (dropped ones must not reach the result) and a mask.
func lowRankData(rng *rand.Rand, c lowRankCase) (x []float32, mask []uint64) {
	x = make([]float32, c.rows*c.ld)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	if !c.masked {
		return x, nil
	}
	mask = make([]uint64, (c.lo+len(x)+63)/64+1)
	for i := range mask {
		mask[i] = rng.Uint64() | rng.Uint64() // about 3/4 kept
	}
	for i := 0; i < len(x); i += 29 {
		if !kept(mask, c.lo+i) {
			x[i] = float32(math.NaN())
		}
	}
	return x, mask
}

func lrRandMat(rng *rand.Rand, n int) []float32 {
	m := make([]float32, n)
	for i := range m {
		m[i] = float32(rng.NormFloat64())
	}
	return m
}

// guarded returns a slice of n elements set to 7 inside guards of 7.
func lrGuarded(n int) (all, inner []float32) {
	all = make([]float32, n+2)
	for i := range all {
		all[i] = 7
	}
	return all, all[1 : n+1]
}

func lrCheckGuards(t *testing.T, c lowRankCase, all []float32) {
	t.Helper()
	if all[0] != 7 || all[len(all)-1] != 7 {
		t.Fatalf("%v: wrote outside the output", c)
	}
}

func lrNear(got float32, want, scale float64) bool {
	return math.Abs(float64(got)-want) <= 1e-5*(scale+1)
}

// TestLowRankDot checks C = alpha·A·(X∘M)ᵀ against a float64 reference.
func TestLowRankDot(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 1))
	forEachImpl(t, "lowrank", func(t *testing.T) {
		for _, c := range lowRankCases() {
			x, mask := lowRankData(rng, c)
			lda := c.n + 2
			a := lrRandMat(rng, c.r*lda)
			ldc := c.rows + 1
			all, out := lrGuarded(c.r*ldc - 1)
			const alpha = 0.75
			LowRankDot(c.r, c.rows, c.n, alpha, a, lda, x, c.ld, mask, c.lo, out, ldc)
			lrCheckGuards(t, c, all)
			for j := range c.r {
				for i := range c.rows {
					var s, abs float64
					for p := range c.n {
						if kept(mask, c.lo+i*c.ld+p) {
							v := float64(a[j*lda+p]) * float64(x[i*c.ld+p])
							s += v
							abs += math.Abs(v)
						}
					}
					if got := out[j*ldc+i]; !lrNear(got, alpha*s, abs) {
						t.Fatalf("%v: c[%d][%d] = %v, want %v", c, j, i, got, alpha*s)
					}
				}
				if j+1 < c.r && out[j*ldc+c.rows] != 7 {
					t.Fatalf("%v: wrote c's padding after row %d", c, j)
				}
			}
		}
	})
}

// TestLowRankOuter checks C = alpha·H·(X∘M) against a float64 reference.
func TestLowRankOuter(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 2))
	forEachImpl(t, "lowrank", func(t *testing.T) {
		for _, c := range lowRankCases() {
			x, mask := lowRankData(rng, c)
			ldh := c.rows + 3
			h := lrRandMat(rng, c.r*ldh)
			ldc := c.n + 1
			all, out := lrGuarded(c.r*ldc - 1)
			const alpha = -1.25
			LowRankOuter(c.r, c.rows, c.n, alpha, h, ldh, x, c.ld, mask, c.lo, out, ldc)
			lrCheckGuards(t, c, all)
			for j := range c.r {
				for q := range c.n {
					var s, abs float64
					for i := range c.rows {
						if kept(mask, c.lo+i*c.ld+q) {
							v := float64(h[j*ldh+i]) * float64(x[i*c.ld+q])
							s += v
							abs += math.Abs(v)
						}
					}
					if got := out[j*ldc+q]; !lrNear(got, alpha*s, abs) {
						t.Fatalf("%v: c[%d][%d] = %v, want %v", c, j, q, got, alpha*s)
					}
				}
			}
		}
	})
}

// TestLowRankExpand checks C = alpha·Hᵀ·A, masked, overwritten and added
// onto, against a float64 reference.
func TestLowRankExpand(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 3))
	forEachImpl(t, "lowrank", func(t *testing.T) {
		for _, c := range lowRankCases() {
			for _, acc := range []bool{false, true} {
				ldh := c.rows + 1
				h := lrRandMat(rng, c.r*ldh)
				lda := c.n + 5
				a := lrRandMat(rng, c.r*lda)
				// C has c's stride and mask layout.
				c0, mask := lowRankData(rng, c)
				for i, v := range c0 {
					if v != v {
						c0[i] = 1
					}
				}
				all, out := lrGuarded(len(c0) - (c.ld - c.n))
				copy(out, c0)
				const alpha = 0.5
				LowRankExpand(c.r, c.rows, c.n, alpha, h, ldh, a, lda, acc, out, c.ld, mask, c.lo)
				lrCheckGuards(t, c, all)
				for i := range c.rows {
					for q := range c.ld {
						got := out[min(i*c.ld+q, len(out)-1)]
						if q >= c.n {
							if i*c.ld+q < len(out) && got != c0[i*c.ld+q] {
								t.Fatalf("%v acc=%t: wrote c's padding at [%d][%d]", c, acc, i, q)
							}
							continue
						}
						var s, abs float64
						for j := range c.r {
							v := float64(h[j*ldh+i]) * float64(a[j*lda+q])
							s += v
							abs += math.Abs(v)
						}
						want := alpha * s
						switch {
						case !kept(mask, c.lo+i*c.ld+q) && acc:
							want, abs = float64(c0[i*c.ld+q]), 0
						case !kept(mask, c.lo+i*c.ld+q):
							want, abs = 0, 0
							if math.Float32bits(got) != 0 {
								t.Fatalf("%v: dropped c[%d][%d] = %v, want +0", c, i, q, got)
							}
						case acc:
							want += float64(c0[i*c.ld+q])
						}
						if !lrNear(got, want, abs+1) {
							t.Fatalf("%v acc=%t: c[%d][%d] = %v, want %v", c, acc, i, q, got, want)
						}
					}
				}
			}
		}
	})
}

// TestLowRankChecks checks that bad arguments panic rather than read or
// write out of bounds.
func TestLowRankChecks(t *testing.T) {
	x := make([]float32, 64)
	mask := make([]uint64, 1)
	for name, f := range map[string]func(){
		"rank 9":       func() { LowRankDot(9, 1, 1, 1, x, 1, x, 1, nil, 0, x, 1) },
		"short x":      func() { LowRankDot(1, 8, 16, 1, x, 16, x, 16, nil, 0, x, 8) },
		"short mask":   func() { LowRankOuter(1, 2, 32, 1, x, 2, x, 32, mask, 16, x, 32) },
		"short c mask": func() { LowRankExpand(1, 4, 16, 1, x, 4, x, 16, true, make([]float32, 128), 32, mask, 0) },
		"bad ldc":      func() { LowRankExpand(1, 2, 16, 1, x, 2, x, 16, false, x, 8, nil, 0) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
