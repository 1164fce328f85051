package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSgemmKernel512 compares each size of the AVX-512 micro-kernel (its
// portable form where the implementation is not enabled) with a float64
// reference, over depths
// that cover the unrolled loop and its remainder, the three epilogues (beta
// 0, 1, other), panels at a stride from each other, and with and without a
// bias row (the Bias variants).
func TestSgemmKernel512(t *testing.T) {
	forEachImpl(t, "sgemm", testSgemmKernel512)
}

func testSgemmKernel512(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for _, sz := range [][2]int{{2, 2}, {2, 1}, {1, 2}, {1, 1}} {
		ap, bp := sz[0], sz[1]
		mr, nr := ap*sgemmMR, bp*sgemmNR
		for i, kc := range []int{1, 3, 4, 5, 8, 31, 256, 1, 4, 31, 256} {
			withBias := i >= 7
			for _, beta := range []float32{0, 1, -0.7} {
				aStride, bStride := kc*sgemmMR+5, kc*sgemmNR+16
				a := make([]float32, (ap-1)*aStride+kc*sgemmMR)
				b := make([]float32, (bp-1)*bStride+kc*sgemmNR)
				for i := range a {
					a[i] = rng.Float32()*2 - 1
				}
				for i := range b {
					b[i] = rng.Float32()*2 - 1
				}
				ldc := nr + 3
				c := make([]float32, (mr-1)*ldc+nr)
				for i := range c {
					c[i] = rng.Float32()*2 - 1
					if beta == 0 {
						c[i] = float32(math.NaN())
					}
				}
				c0 := append([]float32(nil), c...)
				var bias []float32
				if withBias {
					bias = make([]float32, nr)
					for i := range bias {
						bias[i] = rng.Float32()*4 - 2
					}
				}
				sgemmKernel512(ap, bp, kc, a, aStride, b, bStride, c, ldc, 1.3, beta, bias)
				const u = 1.0 / (1 << 24)
				gamma := float64(kc+3) * u / (1 - float64(kc+3)*u)
				for i := range mr {
					for j := range ldc {
						if i*ldc+j >= len(c) {
							break
						}
						got := float64(c[i*ldc+j])
						if j >= nr {
							if !math.IsNaN(got) || !math.IsNaN(float64(c0[i*ldc+j])) {
								if got != float64(c0[i*ldc+j]) {
									t.Errorf("%dx%d kc=%d beta=%g: C[%d][%d] outside the tile changed", mr, nr, kc, beta, i, j)
								}
							}
							continue
						}
						want, bound := tileRef(kc, func(p int) float32 { return a[(i/sgemmMR)*aStride+p*sgemmMR+i%sgemmMR] },
							func(p int) float32 { return b[(j/sgemmNR)*bStride+p*sgemmNR+j%sgemmNR] }, bias, j, beta, c0[i*ldc+j])
						if math.Abs(got-want) > gamma*bound {
							t.Errorf("%dx%d kc=%d beta=%g bias=%v: C[%d][%d] = %g, want %g", mr, nr, kc, beta, withBias, i, j, got, want)
						}
					}
				}
			}
		}
	}
}

// TestSgemmEdges512 runs the sizes around the AVX-512 tile (12×32) and its
// halves through the packed path, every transpose combination, on one core
// and on all: each edge variant of the kernel and the buffered ragged tiles.
func TestSgemmEdges512(t *testing.T) {
	sizes := []int{11, 12, 13, 18, 31, 32, 33, 48, 71, 100}
	if testing.Short() {
		sizes = []int{13, 18, 33, 71}
	}
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(21, 22))
		for _, m := range sizes {
			for _, n := range sizes {
				for tr := range 4 {
					sgemmCase{
						transA: tr&1 != 0, transB: tr&2 != 0,
						m: m, n: n, k: 37 + m%5, alpha: 1.3, beta: []float32{0, -0.7}[tr%2],
						padA: 1, padB: 2, padC: 3,
					}.run(t, rng)
				}
			}
		}
	})
}

// TestSgemmBlockings runs the packed path under blockings other than the
// default, as the sweep benchmark does, so that every blocking it times is
// known to compute the right product.
func TestSgemmBlockings(t *testing.T) {
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(23, 24))
		for _, blk := range []sgemmBlocking{{kc: 64, mc: 24, nt: 64}, {kc: 128, mc: 48, nt: 128}, {kc: 384, mc: 144, nt: 768}} {
			for tr := range 4 {
				tc := sgemmCase{transA: tr&1 != 0, transB: tr&2 != 0, m: 101, n: 203, k: 419, alpha: 0.9, beta: 1.1}
				tc.blk = &blk
				tc.run(t, rng)
			}
		}
		// Deeper than one pass of the default blocking: two passes of
		// 504 and 496.
		sgemmCase{m: 37, n: 50, k: 1000, alpha: 0.9, beta: 1.1}.run(t, rng)
	})
}

// TestSgemmPassDepth checks the cut of a chunk into passes: the fewest of
// at most kcMax, of equal depth rounded up to 8, covering kk.
func TestSgemmPassDepth(t *testing.T) {
	for _, c := range []struct{ kk, kcMax, want int }{
		{768, 768, 768}, {1024, 768, 512}, {1000, 768, 504}, {769, 768, 392},
		{100, 768, 100}, {3, 768, 3}, {419, 64, 64}, {419, 128, 112}, {1536, 768, 768},
	} {
		got := sgemmPassDepth(c.kk, c.kcMax)
		if got != c.want {
			t.Errorf("sgemmPassDepth(%d, %d) = %d, want %d", c.kk, c.kcMax, got, c.want)
		}
		if passes := ceilDiv(c.kk, got); passes != ceilDiv(c.kk, c.kcMax) || got > c.kcMax {
			t.Errorf("sgemmPassDepth(%d, %d) = %d: %d passes", c.kk, c.kcMax, got, passes)
		}
	}
}

// TestTilesMR checks that row tiles come in whole micro-kernel tiles of the
// alignment asked for, so that the AVX-512 path (mr = 12) runs its 6-row
// kernel only at the matrix's last edge, and that the split still gives the
// threads a multiple of their count where one exists.
func TestTilesMR(t *testing.T) {
	for _, mr := range []int{sgemmMR, sgemmMR512} {
		for _, m := range []int{7, 90, 256, 1024, 2048, 3000} {
			for _, n := range []int{16, 256, 768, 3072} {
				for _, threads := range []int{1, 2, 4} {
					mc, nt := tilesMR(m, n, threads, sgemmMC512, sgemmNT512, mr)
					if mc%mr != 0 || nt%packBCols != 0 || mc <= 0 || nt <= 0 {
						t.Errorf("tilesMR(%d, %d, %d, mr %d) = %d×%d: not whole tiles", m, n, threads, mr, mc, nt)
					}
				}
			}
		}
	}
	// The weight gradient of a 256-wide input at the small preset: 6-row
	// alignment gave 90-row tiles, each ending in a 6-row edge.
	if mc, _ := tilesMR(256, 768, 2, sgemmMC512, sgemmNT512, sgemmMR512); mc != 96 {
		t.Errorf("tilesMR(256, 768, 2, mr 12): mc = %d, want 96", mc)
	}
	if mc, _ := tilesMR(256, 768, 2, sgemmMC512, sgemmNT512, sgemmMR); mc != 90 {
		t.Errorf("tilesMR(256, 768, 2, mr 6): mc = %d, want 90", mc)
	}
}

// TestSgemmBias checks SgemmBias against a float64 reference at every level:
// shapes that take the fused AVX-512 path with ragged tile edges (the bias
// zero-padded past the last column), deep products cut into several k
// chunks (the bias goes into the first only), several threads, and the
// shapes that fall back to filling C first (vectors, tiny products, k = 0).
func TestSgemmBias(t *testing.T) {
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(25, 26))
		shapes := [][3]int{{1, 40, 9}, {40, 1, 9}, {3, 3, 3}, {5, 7, 0}, {13, 37, 19}, {71, 100, 33}}
		if !testing.Short() {
			shapes = append(shapes, [3]int{200, 70, 300}, [3]int{300, 257, 64},
				[3]int{2100, 40, 1100}) // three k chunks of 512 or less
		}
		for _, s := range shapes {
			for tr := range 4 {
				sgemmCase{
					transA: tr&1 != 0, transB: tr&2 != 0, m: s[0], n: s[1], k: s[2], alpha: 1,
					padA: tr, padB: 1, padC: 2, bias: true,
				}.run(t, rng)
			}
		}
	})
}

// tileRef returns, in float64, element j's 1.3·(Σ_p a(p)·b(p) + bias[j]) +
// beta·c0 (no bias when bias is nil, no c0 when beta is 0), the kernel
// tests' alpha being 1.3, and the sum of the magnitudes of its terms, which
// bounds the float32 error.
func tileRef(kc int, a, b func(p int) float32, bias []float32, j int, beta, c0 float32) (want, bound float64) {
	var s, sa float64
	for p := range kc {
		x := float64(a(p)) * float64(b(p))
		s += x
		sa += math.Abs(x)
	}
	if bias != nil {
		s += float64(bias[j])
		sa += math.Abs(float64(bias[j]))
	}
	want, bound = 1.3*s, 1.3*sa
	if beta != 0 {
		want += float64(beta) * float64(c0)
		bound += math.Abs(float64(beta) * float64(c0))
	}
	return want, bound
}

// TestSgemmKernel512Direct compares the direct-A kernels (12 rows of A read
// in place, stored by rows or transposed) with a float64 reference at every
// level: both widths, with and without a bias (rows only), the three
// epilogues, depths around the unrolled loop, and A padded with NaN past
// what the kernel may read.
func TestSgemmKernel512Direct(t *testing.T) {
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(27, 28))
		for _, bp := range []int{2, 1} {
			nr := bp * sgemmNR
			for _, kc := range []int{1, 3, 4, 5, 31, 256} {
				for _, beta := range []float32{0, 1, -0.7} {
					for _, form := range []string{"rows", "rows+bias", "transposed"} {
						withBias, trans := form == "rows+bias", form == "transposed"
						lda, bStride := kc+3, kc*sgemmNR+16
						a := randPadded(rng, sgemmMR512, kc, lda)
						at := func(i, p int) float32 { return a[i*lda+p] }
						if trans {
							lda = sgemmMR512 + 5
							a = randPadded(rng, kc, sgemmMR512, lda)
							at = func(i, p int) float32 { return a[p*lda+i] }
						}
						b := make([]float32, (bp-1)*bStride+kc*sgemmNR)
						for i := range b {
							b[i] = rng.Float32()*2 - 1
						}
						var bias []float32
						if withBias {
							bias = make([]float32, nr)
							for i := range bias {
								bias[i] = rng.Float32()*4 - 2
							}
						}
						ldc := nr + 3
						c := make([]float32, (sgemmMR512-1)*ldc+nr)
						for i := range c {
							c[i] = rng.Float32()*2 - 1
						}
						c0 := append([]float32(nil), c...)
						if trans {
							sgemmKernel512DirectT(bp, kc, a, lda, b, bStride, c, ldc, 1.3, beta)
						} else {
							sgemmKernel512Direct(bp, kc, a, lda, b, bStride, c, ldc, 1.3, beta, bias)
						}
						const u = 1.0 / (1 << 24)
						gamma := float64(kc+3) * u / (1 - float64(kc+3)*u)
						for i := range sgemmMR512 {
							for j := range nr {
								want, bound := tileRef(kc, func(p int) float32 { return at(i, p) },
									func(p int) float32 { return b[(j/sgemmNR)*bStride+p*sgemmNR+j%sgemmNR] }, bias, j, beta, c0[i*ldc+j])
								if got := float64(c[i*ldc+j]); !(math.Abs(got-want) <= gamma*bound) {
									t.Errorf("12x%d %s kc=%d beta=%g: C[%d][%d] = %g, want %g", nr, form, kc, beta, i, j, got, want)
								}
							}
							for j := nr; j < ldc && i*ldc+j < len(c); j++ {
								if c[i*ldc+j] != c0[i*ldc+j] {
									t.Errorf("12x%d kc=%d: C[%d][%d] outside the tile changed", nr, kc, i, j)
								}
							}
						}
					}
				}
			}
		}
	})
}

// TestSgemmDirectA runs products whose A the AVX-512 path reads in place
// (transposed or not, tiles of whole 12-row groups, the last tile packed)
// and ones it must pack (a 4 KiB row stride, a transposed A with a bias),
// deep enough for several k chunks, with and without a bias, against the
// float64 reference, and checks which strides are read in place.
func TestSgemmDirectA(t *testing.T) {
	for _, c := range []struct {
		transA bool
		lda    int
		want   bool
	}{{false, 256, true}, {false, 768, true}, {false, 37, true}, {false, 1024, false}, {false, 512, false}, {false, 3072, false}, {true, 256, true}, {true, 1024, true}} {
		if got := sgemmReadsAInPlace(c.transA, c.lda); got != c.want {
			t.Errorf("sgemmReadsAInPlace(%v, %d) = %v, want %v", c.transA, c.lda, got, c.want)
		}
	}
	forEachImpl(t, "sgemm", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(29, 30))
		// 108 rows are two tiles of whole 12-row groups, 100 end in a
		// packed tile; k = 1021 with padA 3 is the 4 KiB stride.
		shapes := [][3]int{{24, 40, 37}, {108, 33, 40}, {100, 33, 40}, {24, 20, 1024 - 3}}
		if !testing.Short() {
			shapes = append(shapes, [3]int{96, 33, 300}, [3]int{200, 70, 64}, [3]int{256, 48, 1024 - 3},
				[3]int{2100, 40, 1100}) // several k chunks
		}
		for _, s := range shapes {
			for _, padA := range []int{0, 3} {
				for v := range 4 {
					bias, transA := v&1 != 0, v&2 != 0
					if bias && s[0]*s[1]*s[2] > 1e7 {
						continue // the deep product once per transpose
					}
					tc := sgemmCase{transA: transA, m: s[0], n: s[1], k: s[2], alpha: 1, padA: padA, padB: 1, padC: 2, bias: bias}
					if !bias {
						tc.alpha, tc.beta = 0.7, -1.1
					}
					tc.run(t, rng)
				}
			}
		}
	})
}
