package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkGemmBF16 times GemmBF16 on BenchmarkSgemm's shapes with both
// operands in bfloat16 (converted before the timing: bf16 weights and
// bf16 activations, as in inference on a bf16 base; the training step's
// cases, float32 operands rounded while packed, are BenchmarkGemmBF16F32A
// and BenchmarkGemmBF16F32), counting 2·m·n·k FLOPs like BenchmarkSgemm; run
// the two together to compare, e.g.
//
//	go test ./internal/kernels -run XXX -bench 'GemmBF16/n=1024|Sgemm/n=1024' -count 6 | benchstat -col .name -
func BenchmarkGemmBF16(b *testing.B) {
	b.Logf("implementation: %s", Implementation())
	benchSgemm(b, func() func(s sgemmBenchShape, a, bb, c []float32) {
		// The bf16 copies are made once per shape (the first call).
		var ah, bh []uint16
		var last sgemmBenchShape
		return func(s sgemmBenchShape, a, bb, c []float32) {
			if ah == nil || s != last {
				ah, bh, last = make([]uint16, len(a)), make([]uint16, len(bb)), s
				ToBF16(ah, a)
				ToBF16(bh, bb)
			}
			GemmBF16(s.transA, s.transB, s.m, s.n, s.k, 1, BF16Mat{BF16: ah, Ld: ld(s.transA, s.m, s.k)},
				BF16Mat{BF16: bh, Ld: ld(s.transB, s.k, s.n)}, 0, c, s.n)
		}
	}())
}

// BenchmarkGemmBF16F32A times GemmBF16 with a float32 A (activations,
// rounded while packed) and a bf16 B (weights): the mixed-precision
// training case.
func BenchmarkGemmBF16F32A(b *testing.B) {
	benchSgemm(b, func() func(s sgemmBenchShape, a, bb, c []float32) {
		var bh []uint16
		var last sgemmBenchShape
		return func(s sgemmBenchShape, a, bb, c []float32) {
			if bh == nil || s != last {
				bh, last = make([]uint16, len(bb)), s
				ToBF16(bh, bb)
			}
			GemmBF16(s.transA, s.transB, s.m, s.n, s.k, 1, BF16Mat{F32: a, Ld: ld(s.transA, s.m, s.k)},
				BF16Mat{BF16: bh, Ld: ld(s.transB, s.k, s.n)}, 0, c, s.n)
		}
	}())
}

// BenchmarkGemmBF16F32 times GemmBF16 with both operands float32, rounded
// while packed: the weight gradient's case in mixed-precision training
// (activations times output gradients).
func BenchmarkGemmBF16F32(b *testing.B) {
	benchSgemm(b, func(s sgemmBenchShape, a, bb, c []float32) {
		GemmBF16(s.transA, s.transB, s.m, s.n, s.k, 1, BF16Mat{F32: a, Ld: ld(s.transA, s.m, s.k)},
			BF16Mat{F32: bb, Ld: ld(s.transB, s.k, s.n)}, 0, c, s.n)
	})
}

// BenchmarkGemmBF16Blocking is the sweep behind bf16DefaultBlocking: the
// paired path under the default blocking and under blockings that each
// change one of kp, mc or nt, per wall-clock and per CPU second, run as
//
//	go test ./internal/kernels -run XXX -bench GemmBF16Blocking -cpu 1 -count 5 -benchtime 0.4s | benchstat -col /blk -
func BenchmarkGemmBF16Blocking(b *testing.B) {
	if !gemmBF16Asm {
		b.Skip("no AVX512_BF16 kernel")
	}
	def := bf16DefaultBlocking
	blks := []bf16Blocking{def}
	for _, kp := range []int{64, 128, 192, 384, 512} {
		blks = append(blks, bf16Blocking{kp, def.mc, def.nt, def.packMax})
	}
	for _, mc := range []int{48, 72, 144, 192} {
		blks = append(blks, bf16Blocking{def.kp, mc, def.nt, def.packMax})
	}
	for _, nt := range []int{128, 512} {
		blks = append(blks, bf16Blocking{def.kp, def.mc, nt, def.packMax})
	}
	for _, s := range [][3]int{{1024, 1024, 1024}, {2048, 768, 3072}} {
		m, k, n := s[0], s[1], s[2]
		rng := rand.New(rand.NewPCG(1, 1))
		a, bb, c := make([]uint16, m*k), make([]uint16, k*n), make([]float32, m*n)
		for i := range a {
			a[i] = Float32ToBF16(rng.Float32())
		}
		for i := range bb {
			bb[i] = Float32ToBF16(rng.Float32())
		}
		am, bm := BF16Mat{BF16: a, Ld: k}, BF16Mat{BF16: bb, Ld: n}
		for _, blk := range blks {
			name := fmt.Sprintf("m=%d,k=%d,n=%d/blk=kp%d,mc%d,nt%d", m, k, n, blk.kp, blk.mc, blk.nt)
			b.Run(name, func(b *testing.B) {
				gemmBF16(true, blk, false, false, m, n, k, 1, am, bm, 0, c, n)
				b.ResetTimer()
				cpu0 := processCPU()
				for b.Loop() {
					gemmBF16(true, blk, false, false, m, n, k, 1, am, bm, 0, c, n)
				}
				reportRate(b, 2*float64(m)*float64(n)*float64(k), "GFLOP", cpu0)
			})
		}
	}
}

// BenchmarkBF16Kernel times the 12×32 paired micro-kernel alone on
// L1-resident panels (256 k pairs), beside BenchmarkSgemmKernel512.
func BenchmarkBF16Kernel(b *testing.B) {
	if !gemmBF16Asm {
		b.Skip("no AVX512_BF16 kernel")
	}
	const kp = 256
	a := make([]uint32, 2*kp*sgemmMR)
	bb := make([]uint32, 2*kp*sgemmNR)
	c := make([]float32, sgemmMR512*sgemmNR512)
	cpu0 := processCPU()
	for b.Loop() {
		bf16Kernel(2, 2, kp, a, kp*sgemmMR, bb, kp*sgemmNR, c, sgemmNR512, 1, 1, nil)
	}
	reportRate(b, 2*sgemmMR512*sgemmNR512*2*kp, "GFLOP", cpu0)
}

// BenchmarkBF16KernelTile times the 12×32 paired micro-kernel as a compute
// tile of the product calls it: 256 k pairs, cycling through 8 A and 16 B
// micro-panel pairs into a 96×512 tile of C (row stride 512), so that A, B
// and C come from L2 rather than from L1 as in BenchmarkBF16Kernel. The
// gap between the two is what the cache footprint of a tile costs; the gap
// to BenchmarkGemmBF16Blocking is packing and the passes over C.
func BenchmarkBF16KernelTile(b *testing.B) {
	if !gemmBF16Asm {
		b.Skip("no AVX512_BF16 kernel")
	}
	const kp, na, nb, ldc = 256, 8, 16, 512
	aw, bw := 2*kp*sgemmMR, 2*kp*sgemmNR
	a := make([]uint32, na*aw)
	bb := make([]uint32, nb*bw)
	c := make([]float32, na*sgemmMR512*ldc)
	cpu0 := processCPU()
	i := 0
	for b.Loop() {
		ia, ib := i%na, (i/na)%nb
		off := ia*sgemmMR512*ldc + ib*sgemmNR512
		bf16Kernel(2, 2, kp, a[ia*aw:], kp*sgemmMR, bb[ib*bw:], kp*sgemmNR, c[off:], ldc, 1, 1, nil)
		i++
	}
	reportRate(b, 2*sgemmMR512*sgemmNR512*2*kp, "GFLOP", cpu0)
}
