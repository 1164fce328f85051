package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// sgemmCase is one product to check. The stored matrices carry padding
// (ld > width) filled with NaN for A and B, so that any read outside op(A)
// and op(B) poisons the result, and with a sentinel for C, which must come
// back untouched.
type sgemmCase struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	padA, padB     int // extra elements per stored row
	padC           int
	// blk, if set, runs the packed path with this blocking instead of
	// Sgemm (m, n and k must then be positive).
	blk *sgemmBlocking
	// bias runs SgemmBias with a random bias row instead (alpha must be
	// 1 and beta 0).
	bias bool
}

func (tc sgemmCase) String() string {
	t := func(b bool) string {
		if b {
			return "T"
		}
		return "N"
	}
	return fmt.Sprintf("%s%s/m=%d,n=%d,k=%d/alpha=%g,beta=%g/pad=%d,%d,%d",
		t(tc.transA), t(tc.transB), tc.m, tc.n, tc.k, tc.alpha, tc.beta, tc.padA, tc.padB, tc.padC)
}

const cPadSentinel = 12345.5

// run performs the product with Sgemm and checks it against a float64
// reference.
//
// Error bound. Every entry of C is alpha·Σ_p a_p·b_p + beta·c computed in
// float32 from float32 inputs, and whatever the order of the summation (the
// kernels block k, keep several partial sums, use FMA or not), each product
// a_p·b_p and the term beta·c pass through at most k+3 roundings: k-1
// additions within the sum, plus the products themselves, the scaling by
// alpha and beta, and the final addition (the blocked kernels add one
// rounding per block of k but save as many inside the blocks). With unit
// roundoff u = 2⁻²⁴ (half of float32's machine epsilon), the standard
// bound (Higham, Accuracy and Stability, §3.1) is
//
//	|got − exact| ≤ γ(k+3)·(|alpha|·Σ_p |a_p|·|b_p| + |beta|·|c|),  γ(n) = n·u/(1 − n·u).
//
// The float64 reference is exact to ~1e-16 relative, far inside that.
func (tc sgemmCase) run(t *testing.T, rng *rand.Rand) {
	t.Helper()
	m, n, k := tc.m, tc.n, tc.k
	// Stored shapes: A is m×k (k×m when transposed), B is k×n (n×k).
	ar, ac := m, k
	if tc.transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if tc.transB {
		br, bc = n, k
	}
	lda, ldb, ldc := max(1, ac)+tc.padA, max(1, bc)+tc.padB, n+tc.padC
	a := randPadded(rng, ar, ac, lda)
	b := randPadded(rng, br, bc, ldb)
	c := make([]float32, (m-1)*ldc+n+tc.padC)
	for i := range c {
		c[i] = cPadSentinel
	}
	for i := range m {
		for j := range n {
			if tc.beta == 0 {
				c[i*ldc+j] = float32(math.NaN()) // must be ignored
			} else {
				c[i*ldc+j] = rng.Float32()*2 - 1
			}
		}
	}
	c0 := append([]float32(nil), c...)

	var bias []float32
	switch {
	case tc.bias:
		bias = make([]float32, n+2)
		for i := range bias {
			bias[i] = rng.Float32()*4 - 2
		}
		SgemmBias(tc.transA, tc.transB, m, n, k, a, lda, b, ldb, bias, c, ldc)
	case tc.blk != nil:
		sgemmPackedBlocking(*tc.blk, tc.transA, tc.transB, m, n, k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)
	default:
		Sgemm(tc.transA, tc.transB, m, n, k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)
	}

	// op(A) by rows and op(B) by columns, in float64, so that the
	// reference's inner loop runs over two contiguous slices.
	opA := make([]float64, m*k)
	opBT := make([]float64, n*k)
	for i := range m {
		for p := range k {
			if tc.transA {
				opA[i*k+p] = float64(a[p*lda+i])
			} else {
				opA[i*k+p] = float64(a[i*lda+p])
			}
		}
	}
	for j := range n {
		for p := range k {
			if tc.transB {
				opBT[j*k+p] = float64(b[j*ldb+p])
			} else {
				opBT[j*k+p] = float64(b[p*ldb+j])
			}
		}
	}
	const u = 1.0 / (1 << 24)
	gamma := float64(k+3) * u / (1 - float64(k+3)*u)
	alpha, beta := float64(tc.alpha), float64(tc.beta)
	bad := 0
	for i := range m {
		ai := opA[i*k : i*k+k]
		for j := range n {
			bj := opBT[j*k : j*k+k]
			var s, sa float64
			for p, x := range ai {
				x *= bj[p]
				s += x
				sa += math.Abs(x)
			}
			if bias != nil {
				s += float64(bias[j])
				sa += math.Abs(float64(bias[j]))
			}
			want := alpha * s
			bound := math.Abs(alpha) * sa
			if tc.beta != 0 {
				want += beta * float64(c0[i*ldc+j])
				bound += math.Abs(beta * float64(c0[i*ldc+j]))
			}
			bound *= gamma
			got := float64(c[i*ldc+j])
			if !(math.Abs(got-want) <= bound) {
				if bad++; bad <= 5 {
					t.Errorf("%v: C[%d][%d] = %g, want %g ± %.3g", tc, i, j, got, want, bound)
				}
			}
		}
		for j := n; j < ldc && i*ldc+j < len(c); j++ {
			if c[i*ldc+j] != cPadSentinel {
				if bad++; bad <= 5 {
					t.Errorf("%v: padding C[%d][%d] changed to %g", tc, i, j, c[i*ldc+j])
				}
			}
		}
	}
	if bad > 5 {
		t.Errorf("%v: %d bad elements in all", tc, bad)
	}
}

// randPadded returns a rows×cols matrix with row stride ld, uniform in
// [-1, 1), its padding NaN.
func randPadded(rng *rand.Rand, rows, cols, ld int) []float32 {
	if rows == 0 {
		return nil
	}
	x := make([]float32, (rows-1)*ld+cols)
	for i := range x {
		if i%ld < cols {
			x[i] = rng.Float32()*2 - 1
		} else {
			x[i] = float32(math.NaN())
		}
	}
	return x
}

var sgemmEdgeSizes = []int{1, 5, 6, 7, 15, 16, 17}

// TestSgemmRandom checks random shapes, ragged ones included, with every
// transpose combination and a spread of alpha, beta and padding.
func TestSgemmRandom(t *testing.T) {
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		maxDim, cases := 300, 48
		if testing.Short() {
			maxDim, cases = 120, 24
		}
		dim := func() int {
			if rng.IntN(3) == 0 {
				return sgemmEdgeSizes[rng.IntN(len(sgemmEdgeSizes))]
			}
			return 1 + rng.IntN(maxDim)
		}
		scalars := []float32{0, 1, -0.7, 1.3}
		for i := range cases {
			tc := sgemmCase{
				transA: i&1 != 0, transB: i&2 != 0,
				m: dim(), n: dim(), k: dim(),
				alpha: scalars[(i/4)%4], beta: scalars[rng.IntN(4)],
			}
			if rng.IntN(2) == 0 {
				tc.padA, tc.padB, tc.padC = rng.IntN(9), rng.IntN(9), rng.IntN(9)
			}
			tc.run(t, rng)
		}
	})
}

// TestSgemmEdges runs every combination of the edge sizes around the tile
// dimensions (6 and 16), which exercises the partial tiles, on the small
// path and the packed path.
func TestSgemmEdges(t *testing.T) {
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		ks := []int{1, 7, 17, 64}
		if testing.Short() {
			ks = []int{7, 64}
		}
		for _, m := range sgemmEdgeSizes {
			for _, n := range sgemmEdgeSizes {
				for _, k := range ks {
					for tr := range 4 {
						sgemmCase{
							transA: tr&1 != 0, transB: tr&2 != 0,
							m: m, n: n, k: k, alpha: 1.3, beta: -0.7,
							padA: 1, padB: 2, padC: 3,
						}.run(t, rng)
					}
				}
			}
		}
	})
}

// TestSgemmPaths picks shapes that take each path of the implementation.
func TestSgemmPaths(t *testing.T) {
	type shape struct {
		name    string
		m, n, k int
		short   bool // also run under -short
	}
	shapes := []shape{
		{"tiny", 5, 6, 7, true},    // small path in both implementations
		{"small", 9, 11, 13, true}, // small path in Go, packed with AVX2
		{"gemv-row", 1, 300, 257, true},
		{"gemv-col", 300, 1, 257, true},
		{"gemv-row-threads", 1, 1100, 600, true}, // split over threads
		{"gemv-col-threads", 1100, 1, 600, true},
		{"packed", 40, 50, 60, true},
		{"parallel", 150, 140, 130, true},
		{"large-k", 30, 40, 3*sgemmKC + 17, true},
		{"thin-m", 3, 600, 300, true},
		// Past sgemmPackMax: chunked along m and k, then along n and k.
		{"chunked-m", sgemmPackMax/sgemmKC + 50, 5, sgemmKC + 30, false},
		{"chunked-n", 5, sgemmPackMax/sgemmKC + 50, sgemmKC + 30, false},
	}
	scalars := [][2]float32{{1, 0}, {-0.7, 1.3}, {1.3, 1}}
	if testing.Short() {
		scalars = scalars[:2]
	}
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, s := range shapes {
			if testing.Short() && !s.short {
				continue
			}
			for tr := range 4 {
				for i, ab := range scalars {
					// Under -short, the larger shapes get one pair of
					// scalars per transpose combination.
					if testing.Short() && s.m*s.n*s.k > 1<<19 && i != tr%len(scalars) {
						continue
					}
					sgemmCase{
						transA: tr&1 != 0, transB: tr&2 != 0,
						m: s.m, n: s.n, k: s.k, alpha: ab[0], beta: ab[1],
						padA: 3, padB: 1, padC: 2,
					}.run(t, rng)
				}
			}
		}
	})
}

// TestSgemmSingleThread runs the packed path with one core, where the
// caller does all the work without helpers.
func TestSgemmSingleThread(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	m, n, k := 130, 150, 300
	if testing.Short() {
		m, n, k = 70, 80, 290
	}
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for tr := range 4 {
			sgemmCase{transA: tr&1 != 0, transB: tr&2 != 0,
				m: m, n: n, k: k, alpha: -0.7, beta: 1.3}.run(t, rng)
		}
	})
}

// TestSgemmDegenerate covers the quick returns: m or n zero (nothing
// happens), k zero or alpha zero (C scaled by beta).
func TestSgemmDegenerate(t *testing.T) {
	forEachImpl(t, "sgemm", func(t *testing.T) {
		c := []float32{1, 2, 3, 4}
		Sgemm(false, false, 0, 2, 3, 1, nil, 3, make([]float32, 6), 2, 0, c, 2)
		Sgemm(false, false, 2, 0, 3, 1, make([]float32, 6), 3, nil, 1, 0, c, 1)
		if c[0] != 1 || c[3] != 4 {
			t.Errorf("m or n = 0 changed C: %v", c)
		}
		Sgemm(false, false, 2, 2, 0, 1, make([]float32, 1), 1, nil, 2, 2, c, 2)
		if c[0] != 2 || c[3] != 8 {
			t.Errorf("k = 0, beta = 2: C = %v, want [2 4 6 8]", c)
		}
		a := []float32{float32(math.NaN()), 1, 1, 1}
		Sgemm(false, false, 2, 2, 2, 0, a, 2, a, 2, 0.5, c, 2)
		if c[0] != 1 || c[3] != 4 {
			t.Errorf("alpha = 0, beta = 0.5: C = %v, want [1 2 3 4]", c)
		}
		c[1] = float32(math.NaN())
		Sgemm(false, false, 2, 2, 2, 0, a, 2, a, 2, 0, c, 2)
		for _, v := range c {
			if v != 0 {
				t.Errorf("alpha = 0, beta = 0: C = %v, want zeros", c)
				break
			}
		}
	})
}

// TestSgemmPanics checks that bad arguments panic with the package's prefix.
func TestSgemmPanics(t *testing.T) {
	s := func(n int) []float32 { return make([]float32, n) }
	cases := []struct {
		name   string
		f      func()
		reason string
	}{
		{"m<0", func() { Sgemm(false, false, -1, 2, 2, 1, s(4), 2, s(4), 2, 0, s(4), 2) }, "m < 0"},
		{"n<0", func() { Sgemm(false, false, 2, -1, 2, 1, s(4), 2, s(4), 2, 0, s(4), 2) }, "n < 0"},
		{"k<0", func() { Sgemm(false, false, 2, 2, -1, 1, s(4), 2, s(4), 2, 0, s(4), 2) }, "k < 0"},
		{"lda", func() { Sgemm(false, false, 2, 2, 3, 1, s(6), 2, s(6), 2, 0, s(4), 2) }, "leading dimension of A"},
		{"lda-trans", func() { Sgemm(true, false, 3, 2, 2, 1, s(6), 2, s(4), 2, 0, s(6), 2) }, "leading dimension of A"},
		{"ldb", func() { Sgemm(false, false, 2, 3, 2, 1, s(4), 2, s(6), 2, 0, s(6), 3) }, "leading dimension of B"},
		{"ldb-trans", func() { Sgemm(false, true, 2, 2, 3, 1, s(6), 3, s(6), 2, 0, s(4), 2) }, "leading dimension of B"},
		{"ldc", func() { Sgemm(false, false, 2, 3, 2, 1, s(4), 2, s(6), 3, 0, s(6), 2) }, "leading dimension of C"},
		{"lda0", func() { Sgemm(false, false, 2, 2, 0, 1, nil, 0, nil, 2, 0, s(4), 2) }, "leading dimension of A"},
		{"short-a", func() { Sgemm(false, false, 2, 2, 2, 1, s(3), 2, s(4), 2, 0, s(4), 2) }, "length of a"},
		{"short-a-trans", func() { Sgemm(true, false, 3, 2, 2, 1, s(5), 3, s(4), 2, 0, s(6), 2) }, "length of a"},
		{"short-b", func() { Sgemm(false, false, 2, 2, 2, 1, s(4), 2, s(3), 2, 0, s(4), 2) }, "length of b"},
		{"short-b-trans", func() { Sgemm(false, true, 2, 3, 2, 1, s(4), 2, s(5), 2, 0, s(6), 3) }, "length of b"},
		{"short-c", func() { Sgemm(false, false, 2, 2, 2, 1, s(4), 2, s(4), 2, 0, s(3), 2) }, "length of c"},
		{"short-c-ldc", func() { Sgemm(false, false, 2, 2, 2, 1, s(4), 2, s(4), 2, 0, s(4), 3) }, "length of c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				msg, _ := r.(string)
				if !strings.HasPrefix(msg, "kernels: Sgemm: ") || !strings.Contains(msg, tc.reason) {
					t.Errorf("panic %v, want \"kernels: Sgemm: …%s…\"", r, tc.reason)
				}
			}()
			tc.f()
		})
	}
}

// TestSgemmKernel compares the micro-kernels directly, over depths that
// cover the assembly's unrolled loop and its remainder, and the three
// epilogues (beta 0, 1, other).
func TestSgemmKernel(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	forEachImpl(t, "sgemm", func(t *testing.T) {
		for _, kc := range []int{1, 2, 7, 8, 9, 16, 31, 255, 256} {
			for _, beta := range []float32{0, 1, -0.7} {
				a := make([]float32, kc*sgemmMR)
				b := make([]float32, kc*sgemmNR)
				for i := range a {
					a[i] = rng.Float32()*2 - 1
				}
				for i := range b {
					b[i] = rng.Float32()*2 - 1
				}
				const ldc = sgemmNR + 3
				c := make([]float32, 5*ldc+sgemmNR)
				for i := range c {
					c[i] = rng.Float32()*2 - 1
					if beta == 0 {
						c[i] = float32(math.Inf(1))
					}
				}
				c0 := append([]float32(nil), c...)
				sgemmKernel(kc, a, b, c, ldc, 1.3, beta)
				const u = 1.0 / (1 << 24)
				gamma := float64(kc+3) * u / (1 - float64(kc+3)*u)
				for i := range sgemmMR {
					for j := range ldc {
						if i == sgemmMR-1 && j >= sgemmNR {
							break
						}
						got := float64(c[i*ldc+j])
						if j >= sgemmNR {
							if got != float64(c0[i*ldc+j]) {
								t.Errorf("kc=%d beta=%g: C[%d][%d] outside the tile changed", kc, beta, i, j)
							}
							continue
						}
						var s, sa float64
						for p := range kc {
							x := float64(a[p*sgemmMR+i]) * float64(b[p*sgemmNR+j])
							s += x
							sa += math.Abs(x)
						}
						want, bound := 1.3*s, 1.3*sa
						if beta != 0 {
							want += float64(beta) * float64(c0[i*ldc+j])
							bound += math.Abs(float64(beta) * float64(c0[i*ldc+j]))
						}
						if math.Abs(got-want) > gamma*bound {
							t.Errorf("kc=%d beta=%g: C[%d][%d] = %g, want %g", kc, beta, i, j, got, want)
						}
					}
				}
			}
		}
	})
}

// TestSgemmConcurrent calls Sgemm from many goroutines at once, as
// data-parallel training does: products of every size share the helpers
// and the buffer pool. With GOMAXPROCS above the core count, several helpers
// join each product.
func TestSgemmConcurrent(t *testing.T) {
	for _, procs := range []int{runtime.GOMAXPROCS(0), 4} {
		t.Run(fmt.Sprintf("procs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			forEachImpl(t, "sgemm", func(t *testing.T) {
				const workers = 8
				rounds, sizes := 6, []int{8, 70, 150}
				if testing.Short() {
					rounds, sizes = 3, []int{8, 40, 90}
				}
				var wg sync.WaitGroup
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(11, uint64(w)))
						for r := range rounds {
							sz := sizes[(w+r)%3]
							sgemmCase{transA: w&1 != 0, transB: r&1 != 0,
								m: sz + w, n: sz + r, k: sz, alpha: 1, beta: 0.5}.run(t, rng)
						}
					}()
				}
				wg.Wait()
				// And one product at a time, which the helpers share.
				rng := rand.New(rand.NewPCG(12, 0))
				for r := range rounds / 2 {
					sgemmCase{transA: r&1 != 0, m: 130, n: 120, k: 140, alpha: -0.7, beta: 0}.run(t, rng)
				}
			})
		})
	}
}

// TestSgemmAllocs checks that steady-state calls allocate nothing: the
// packing buffers are pooled and the helpers persist.
func TestSgemmAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	forEachImpl(t, "sgemm", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			procs   int
			m, n, k int
		}{
			{"small", 0, 10, 10, 10},
			{"gemv", 0, 1, 500, 300},
			{"gemv-threads", 0, 1, 1100, 600},
			{"one-thread", 1, 200, 200, 200},
			{"threads", 0, 256, 256, 256},
			{"large-k", 0, 64, 256, 3 * sgemmKC},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.procs > 0 {
					defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(tc.procs))
				}
				a := make([]float32, tc.m*tc.k)
				b := make([]float32, tc.k*tc.n)
				c := make([]float32, tc.m*tc.n)
				allocs := testing.AllocsPerRun(20, func() {
					Sgemm(false, true, tc.m, tc.n, tc.k, 1, a, tc.k, b, tc.k, 0, c, tc.n)
				})
				if allocs != 0 {
					t.Errorf("%v allocations per call, want 0", allocs)
				}
			})
		}
	})
}
