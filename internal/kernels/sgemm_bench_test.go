package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// sgemmBenchShape is one benchmark product, named as its sub-benchmark.
type sgemmBenchShape struct {
	name           string
	transA, transB bool
	m, k, n        int
}

// sgemmBenchShapes are the products BenchmarkSgemm and BenchmarkSgemmGonum
// time: square ones, and a transformer projection (2048 tokens, d=256 to
// 3·256) with the two products of its backward pass.
var sgemmBenchShapes = []sgemmBenchShape{
	{"n=256", false, false, 256, 256, 256},
	{"n=512", false, false, 512, 512, 512},
	{"n=1024", false, false, 1024, 1024, 1024},
	{"m=2048,k=256,n=768", false, false, 2048, 256, 768},
	// GPT-2 124M's projections at B·T = 2048 tokens: attention output
	// (and each of Q, K, V), MLP up, MLP down.
	{"m=2048,k=768,n=768", false, false, 2048, 768, 768},
	{"m=2048,k=768,n=3072", false, false, 2048, 768, 3072},
	{"m=2048,k=3072,n=768", false, false, 2048, 3072, 768},
	// dX = dY·Wᵀ and dW = Xᵀ·dY of that projection.
	{"m=2048,k=768,n=256,transB", false, true, 2048, 768, 256},
	{"m=256,k=2048,n=768,transA", true, false, 256, 2048, 768},
	// One token through the projection (generation), and a small tile.
	{"m=1,k=256,n=768", false, false, 1, 256, 768},
	{"n=64", false, false, 64, 64, 64},
}

func benchSgemm(b *testing.B, f func(s sgemmBenchShape, a, bb, c []float32)) {
	for _, s := range sgemmBenchShapes {
		b.Run(s.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			rnd := func(n int) []float32 {
				x := make([]float32, n)
				for i := range x {
					x[i] = rng.Float32()
				}
				return x
			}
			a, bb, c := rnd(s.m*s.k), rnd(s.k*s.n), rnd(s.m*s.n)
			f(s, a, bb, c) // warm up: pools, helpers, caches
			b.ResetTimer()
			cpu0 := processCPU()
			for b.Loop() {
				f(s, a, bb, c)
			}
			reportRate(b, 2*float64(s.m)*float64(s.n)*float64(s.k), "GFLOP", cpu0)
		})
	}
}

// ld returns the row stride of a densely stored rows×cols matrix.
func ld(trans bool, rows, cols int) int {
	if trans {
		return rows
	}
	return cols
}

func BenchmarkSgemm(b *testing.B) {
	b.Logf("implementation: %s", Implementation())
	benchSgemm(b, func(s sgemmBenchShape, a, bb, c []float32) {
		Sgemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, ld(s.transA, s.m, s.k), bb, ld(s.transB, s.k, s.n), 0, c, s.n)
	})
}

// BenchmarkSgemmGonum is the baseline: gonum's pure-Go BLAS, also row-major.
func BenchmarkSgemmGonum(b *testing.B) {
	tr := func(t bool) blas.Transpose {
		if t {
			return blas.Trans
		}
		return blas.NoTrans
	}
	benchSgemm(b, func(s sgemmBenchShape, a, bb, c []float32) {
		gonum.Implementation{}.Sgemm(tr(s.transA), tr(s.transB), s.m, s.n, s.k, 1, a, ld(s.transA, s.m, s.k), bb, ld(s.transB, s.k, s.n), 0, c, s.n)
	})
}

// BenchmarkSgemmKernel times the micro-kernel alone on L1-resident panels:
// the ceiling of one core.
func BenchmarkSgemmKernel(b *testing.B) {
	forEachImplB(b, "sgemm", func(b *testing.B) {
		a := make([]float32, sgemmKC*sgemmMR)
		bb := make([]float32, sgemmKC*sgemmNR)
		c := make([]float32, sgemmMR*sgemmNR)
		for b.Loop() {
			sgemmKernel(sgemmKC, a, bb, c, sgemmNR, 1, 1)
		}
		b.ReportMetric(2*sgemmMR*sgemmNR*sgemmKC*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}

// BenchmarkSgemmKernel512 times the AVX-512 micro-kernel alone on
// L1-resident panels.
func BenchmarkSgemmKernel512(b *testing.B) {
	restore, err := Select("sgemm", "avx512")
	if err != nil {
		b.Skip(err)
	}
	defer restore()
	a := make([]float32, 2*sgemmKC512*sgemmMR)
	bb := make([]float32, 2*sgemmKC512*sgemmNR)
	c := make([]float32, sgemmMR512*sgemmNR512)
	cpu0 := processCPU()
	for b.Loop() {
		sgemmKernel512(2, 2, sgemmKC512, a, sgemmKC512*sgemmMR, bb, sgemmKC512*sgemmNR, c, sgemmNR512, 1, 1, nil)
	}
	reportRate(b, 2*sgemmMR512*sgemmNR512*sgemmKC512, "GFLOP", cpu0)
}

// BenchmarkSgemmBlocking is the sweep behind the blocking constants: the
// packed path on two shapes under the default blocking of the kernel in use
// and under blockings that each change one of KC, MC or NT. It reports the
// rate per CPU second as well as per wall-clock second: on one core (-cpu 1)
// the former is what the blocking changes, undisturbed by other processes.
// The comment above sgemmKC512 quotes it, run as
//
//	go test ./internal/kernels -run XXX -bench SgemmBlocking -cpu 1 -count 5 -benchtime 0.4s | benchstat -col /blk -
func BenchmarkSgemmBlocking(b *testing.B) {
	def := sgemmDefaultBlocking()
	blks := []sgemmBlocking{def}
	for _, kc := range []int{128, 256, 384, 512, 1024} {
		blks = append(blks, sgemmBlocking{kc: kc, mc: def.mc, nt: def.nt})
	}
	for _, mc := range []int{48, 72, 144, 192} {
		blks = append(blks, sgemmBlocking{kc: def.kc, mc: mc, nt: def.nt})
	}
	for _, nt := range []int{256, 1024} {
		blks = append(blks, sgemmBlocking{kc: def.kc, mc: def.mc, nt: nt})
	}
	b.Logf("implementation: %s", Implementation())
	for _, s := range [][3]int{{1024, 1024, 1024}, {2048, 768, 3072}} {
		m, k, n := s[0], s[1], s[2]
		rng := rand.New(rand.NewPCG(1, 1))
		a, bb, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
		for i := range a {
			a[i] = rng.Float32()
		}
		for i := range bb {
			bb[i] = rng.Float32()
		}
		for _, blk := range blks {
			name := fmt.Sprintf("m=%d,k=%d,n=%d/blk=kc%d,mc%d,nt%d", m, k, n, blk.kc, blk.mc, blk.nt)
			b.Run(name, func(b *testing.B) {
				sgemmPackedBlocking(blk, false, false, m, n, k, 1, a, k, bb, n, 0, c, n)
				b.ResetTimer()
				cpu0 := processCPU()
				for b.Loop() {
					sgemmPackedBlocking(blk, false, false, m, n, k, 1, a, k, bb, n, 0, c, n)
				}
				flop := 2 * float64(m) * float64(n) * float64(k) * float64(b.N)
				b.ReportMetric(flop/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				if cpu := processCPU() - cpu0; cpu > 0 {
					b.ReportMetric(flop/cpu.Seconds()/1e9, "GFLOP/cpu-s")
				}
			})
		}
	}
}

// BenchmarkSgemmDirectA times the AVX-512 path with A packed and read in
// place (sgemmBlocking.packA), at the small preset's and GPT-2's row strides, in
// GFLOP per CPU second; the comment on sgemmReadsAInPlace quotes it, run as
//
//	go test ./internal/kernels -run XXX -bench SgemmDirectA -benchtime 40x -count 3
func BenchmarkSgemmDirectA(b *testing.B) {
	restore, err := Select("sgemm", "avx512")
	if err != nil {
		b.Skip(err)
	}
	defer restore()
	for _, s := range [][4]int{{2048, 256, 768, 0}, {2048, 256, 1024, 0}, {2048, 768, 256, 0}, {2048, 1024, 256, 0},
		{256, 2048, 768, 1}, {1024, 2048, 256, 1}, {256, 2048, 1024, 1}} {
		m, k, n, transA := s[0], s[1], s[2], s[3] == 1
		a := make([]float32, m*k)
		bb := make([]float32, k*n)
		c := make([]float32, m*n)
		for i := range a {
			a[i] = float32(i%7) * 0.1
		}
		for _, direct := range []bool{false, true} {
			name := fmt.Sprintf("m=%d,k=%d,n=%d", m, k, n)
			lda := k
			if transA {
				name, lda = name+",transA", m
			}
			b.Run(fmt.Sprintf("%s/direct=%v", name, direct), func(b *testing.B) {
				blk := sgemmDefaultBlocking()
				blk.packA = !direct
				cpu0 := processCPU()
				for b.Loop() {
					sgemmPackedBlocking(blk, transA, false, m, n, k, 1, a, lda, bb, n, 0, c, n)
				}
				reportRate(b, float64(2*m*n*k), "GFLOP", cpu0)
			})
		}
	}
}
