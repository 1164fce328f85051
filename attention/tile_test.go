package attention

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/internal/cputime"
	"github.com/galleon-ml/galleon/internal/kernels"
)

// forEachTileKernel runs f with every tile kernel enabled at the kernel
// level in force. Tests using it must not run in parallel: they switch the
// kernel.
func forEachTileKernel(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	kernels.ForEach("attention", func(name string) bool { t.Run(name, f); return true })
}

func TestGemm(t *testing.T) {
	forEachTileKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, m := range []int{1, 5, 6, 7, 13, 18} {
			for _, n := range []int{1, 8, 16, 17, 32, 47} {
				for _, k := range []int{0, 1, 3, 16, 65} {
					for _, trans := range []bool{false, true} {
						for mode := tileSet; mode <= tileDSAdd; mode++ {
							checkGemm(t, rng, m, n, k, trans, mode)
						}
					}
				}
			}
		}
	})
}

// TestGemmChunked checks products over k in chunks (the scores and dP of
// the kernels) against a float64 reference at odd shapes, and that every
// tile kernel rounds them exactly as the AVX2 one does: the results of a
// training step must not depend on the CPU's vector width.
func TestGemmChunked(t *testing.T) {
	type result struct {
		shape string
		c     []float32
	}
	var ref []result // the avx2 kernel's outputs, in order
	forEachTileKernel(t, func(t *testing.T) {
		name := t.Name()[len("TestGemmChunked/"):]
		rng := rand.New(rand.NewPCG(3, 4))
		i := 0
		for _, m := range []int{6, 7, 13, 96} {
			for _, n := range []int{16, 32, 47, 64, 80, 128} {
				for _, k := range []int{1, 8, 9, 32, 70} {
					for _, trans := range []bool{false, true} {
						for mode := tileSet; mode <= tileDS; mode++ {
							kc := dotChunk(k)
							if k == 70 {
								kc = 70 // one chunk, as gemm
							}
							c := checkGemmKC(t, rng, kc, m, n, k, trans, mode)
							shape := fmt.Sprintf("m=%d n=%d k=%d kc=%d trans=%v mode=%d", m, n, k, kc, trans, mode)
							switch {
							case name == "avx2":
								ref = append(ref, result{shape, c})
							case name != "generic" && ref != nil:
								for x := range c {
									if math.Float32bits(c[x]) != math.Float32bits(ref[i].c[x]) {
										t.Fatalf("%s: c[%d] = %v, avx2 %v", shape, x, c[x], ref[i].c[x])
									}
								}
							}
							i++
						}
					}
				}
			}
		}
	})
}

func checkGemm(t *testing.T, rng *rand.Rand, m, n, k int, trans bool, mode int) {
	t.Helper()
	checkGemmKC(t, rng, 0, m, n, k, trans, mode)
}

// checkGemmKC checks gemmChunked (gemm when kc is 0) against a float64
// reference and returns C.
func checkGemmKC(t *testing.T, rng *rand.Rand, kc, m, n, k int, trans bool, mode int) []float32 {
	t.Helper()
	lda, ldb, ldc := k+3, n+5, n+2
	sai, sak := lda, 1
	if trans {
		lda = m + 3
		sai, sak = 1, lda
	}
	rows := m
	if trans {
		rows = k
	}
	a := randData(rng, max(rows, 1)*lda)
	b := randData(rng, max(k, 1)*ldb)
	c := randData(rng, m*ldc)
	p := randData(rng, m*ldc)
	dv := randData(rng, m)
	want := make([]float64, len(c))
	for i := 0; i < m; i++ {
		for j := 0; j < ldc; j++ {
			want[i*ldc+j] = float64(c[i*ldc+j])
			if j >= n {
				continue
			}
			var s float64
			for q := 0; q < k; q++ {
				s += float64(a[i*sai+q*sak]) * float64(b[q*ldb+j])
			}
			switch mode {
			case tileSet:
				want[i*ldc+j] = s
			case tileAdd:
				want[i*ldc+j] += s
			case tileDS:
				want[i*ldc+j] = float64(p[i*ldc+j]) * (s - float64(dv[i]))
			case tileDSAdd:
				want[i*ldc+j] = float64(p[i*ldc+j]) * (float64(c[i*ldc+j]) + s - float64(dv[i]))
			}
		}
	}
	if kc == 0 {
		gemm(m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
	} else {
		gemmChunked(kc, m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
	}
	for i := range c {
		if d := math.Abs(float64(c[i]) - want[i]); d > 1e-4*(1+math.Abs(want[i])) {
			t.Fatalf("m=%d n=%d k=%d kc=%d trans=%v mode=%d: c[%d] = %v, want %v", m, n, k, kc, trans, mode, i, c[i], want[i])
		}
	}
	return c
}

func BenchmarkGemm(b *testing.B) {
	for _, s := range []struct{ m, n, k int }{{96, 64, 64}, {64, 64, 96}, {66, 128, 64}} {
		for _, trans := range []bool{false, true} {
			b.Run(fmt.Sprintf("%dx%dx%d/trans=%v", s.m, s.n, s.k, trans), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 2))
				a := randData(rng, s.m*s.k)
				bb := randData(rng, s.k*s.n)
				c := make([]float32, s.m*s.n)
				sai, sak := s.k, 1
				if trans {
					sai, sak = 1, s.m
				}
				for i := 0; i < b.N; i++ {
					gemm(s.m, s.n, s.k, a, sai, sak, bb, s.n, c, s.n, tileAdd, nil, nil)
				}
				b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// TestRowDotMatchesGemm checks that rowDot rounds exactly like one element of
// a chunked product, and that a chunked tileDS is exactly zero where the
// value row equals the output row.
func TestRowDotMatchesGemm(t *testing.T) {
	forEachTileKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, d := range []int{1, 7, 16, 32, 64, 65, 96, 128, 200} {
			kc := dotChunk(d)
			const m, n = 6, 16
			a := randData(rng, m*d)
			bT := randData(rng, d*n) // Bᵀ rows: column j of B is row j of bT
			b := make([]float32, d*n)
			for x := 0; x < d; x++ {
				for j := 0; j < n; j++ {
					b[x*n+j] = bT[j*d+x]
				}
			}
			c := make([]float32, m*n)
			gemmChunked(kc, m, n, d, a, d, 1, b, n, c, n, tileSet, nil, nil)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					if got := rowDot(a[i*d:(i+1)*d], bT[j*d:(j+1)*d], kc); got != c[i*n+j] {
						t.Fatalf("d=%d (%d,%d): rowDot %v, gemm %v", d, i, j, got, c[i*n+j])
					}
				}
			}
			// dS = P∘(dP − D) with D from rowDot of the same rows: zero on
			// the diagonal blocks where the rows match.
			dv := make([]float32, m)
			for i := range dv {
				dv[i] = rowDot(a[i*d:(i+1)*d], bT[i*d:(i+1)*d], kc)
			}
			p := make([]float32, m*n)
			for i := range p {
				p[i] = 1
			}
			gemmChunked(kc, m, n, d, a, d, 1, b, n, c, n, tileDS, p, dv)
			for i := 0; i < m; i++ {
				if c[i*n+i] != 0 {
					t.Fatalf("d=%d row %d: dS on matching rows = %v, want 0", d, i, c[i*n+i])
				}
			}
		}
	})
}

// TestRowDot8 checks that rowDot8 rounds each of its rows exactly as
// rowDot does, at odd lengths and strides.
func TestRowDot8(t *testing.T) {
	forEachTileKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, d := range []int{0, 1, 7, 16, 32, 65, 200} {
			for _, s := range []struct{ sx, sy int }{{d, d}, {d + 3, 2*d + 1}} {
				kc := dotChunk(d)
				x := randData(rng, 7*s.sx+d+1)
				y := randData(rng, 7*s.sy+d+1)
				var out [8]float32
				rowDot8(x, s.sx, y, s.sy, d, kc, &out)
				for r := range out {
					if want := rowDot(x[r*s.sx:][:d], y[r*s.sy:][:d], kc); math.Float32bits(out[r]) != math.Float32bits(want) {
						t.Fatalf("d=%d strides %d,%d row %d: %v, rowDot %v", d, s.sx, s.sy, r, out[r], want)
					}
				}
			}
		}
	})
}

// BenchmarkTileProduct compares the tile kernel with kernels.Sgemm on the
// products of one forward tile (96 query rows, 128 keys, D=64): S = Q·Kᵀ
// (Sgemm reads K directly, the tile kernel a transposed copy) and O += P·V.
func BenchmarkTileProduct(b *testing.B) {
	const m, n, d = 96, 128, 64
	rng := rand.New(rand.NewPCG(1, 2))
	q, k, kt := randData(rng, m*d), randData(rng, n*d), randData(rng, d*n)
	p, v := randData(rng, m*n), randData(rng, n*d)
	s, o := make([]float32, m*n), make([]float32, m*d)
	flops := 2 * 2 * float64(m*n*d)
	var cpu0 time.Duration
	report := func(b *testing.B) {
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		b.ReportMetric(flops*float64(b.N)/(cputime.Process()-cpu0).Seconds()/1e9, "GFLOP/cpu-s")
	}
	b.Run("tile", func(b *testing.B) {
		cpu0 = cputime.Process()
		for i := 0; i < b.N; i++ {
			gemmChunked(dotChunk(d), m, n, d, q, d, 1, kt, n, s, n, tileSet, nil, nil)
			gemm(m, d, n, p, n, 1, v, d, o, d, tileAdd, nil, nil)
		}
		report(b)
	})
	b.Run("tile-unchunked", func(b *testing.B) {
		cpu0 = cputime.Process()
		for i := 0; i < b.N; i++ {
			gemm(m, n, d, q, d, 1, kt, n, s, n, tileSet, nil, nil)
			gemm(m, d, n, p, n, 1, v, d, o, d, tileAdd, nil, nil)
		}
		report(b)
	})
	b.Run("sgemm", func(b *testing.B) {
		cpu0 = cputime.Process()
		for i := 0; i < b.N; i++ {
			kernels.Sgemm(false, true, m, n, d, 1, q, d, k, d, 0, s, n)
			kernels.Sgemm(false, false, m, d, n, 1, p, n, v, d, 1, o, d)
		}
		report(b)
	})
}

// TestTransposeAndScaleRows checks transposeRows and scaleRowsTo, bit for
// bit, against their one-multiplication definitions with every tile
// kernel, at sizes around the 8×8 blocks of the assembly and with padded
// strides (nothing outside the written elements may change).
func TestTransposeAndScaleRows(t *testing.T) {
	forEachTileKernel(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, n := range []int{1, 7, 8, 9, 16, 23, 130} {
			for _, d := range []int{1, 5, 8, 15, 16, 24, 32, 64, 80} {
				const s = float32(0.37)
				lds, ldd := d+3, n+5
				src := randData(rng, n*lds)
				dst := randData(rng, d*ldd)
				want := append([]float32(nil), dst...)
				for c := 0; c < n; c++ {
					for x := 0; x < d; x++ {
						want[x*ldd+c] = s * src[c*lds+x]
					}
				}
				transposeRows(dst, ldd, src, lds, n, d, s)
				for i := range dst {
					if math.Float32bits(dst[i]) != math.Float32bits(want[i]) {
						t.Fatalf("transposeRows n=%d d=%d: dst[%d] = %v, want %v", n, d, i, dst[i], want[i])
					}
				}
				for _, ss := range []int{0, 1} {
					scales := randData(rng, n)
					ldd := d + 2
					dst := randData(rng, n*ldd)
					want := append([]float32(nil), dst...)
					for r := 0; r < n; r++ {
						for j := 0; j < d; j++ {
							want[r*ldd+j] = scales[r*ss] * src[r*lds+j]
						}
					}
					scaleRowsTo(dst, ldd, src, lds, n, d, scales, ss)
					for i := range dst {
						if math.Float32bits(dst[i]) != math.Float32bits(want[i]) {
							t.Fatalf("scaleRowsTo rows=%d d=%d ss=%d: dst[%d] = %v, want %v", n, d, ss, i, dst[i], want[i])
						}
					}
				}
			}
		}
	})
}
