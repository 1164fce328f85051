package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

var i8BenchShapes = [][3]int{{256, 1024, 1024}, {1024, 1024, 4096}}

// BenchmarkI8GemmF32 measures the packed product with fused dequantization
// (activations already quantized), with each assembly kernel.
func BenchmarkI8GemmF32(b *testing.B) {
	ForEach("i8gemm", func(name string) bool {
		for _, s := range i8BenchShapes {
			m, k, n := s[0], s[1], s[2]
			b.Run(fmt.Sprintf("%s/M=%d,K=%d,N=%d", name, m, k, n), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 1))
				var pa I8PackedA
				PackI8A(m, k, randI8(rng, m*k), k, &pa)
				pb := PackI8B(n, k, randI8(rng, n*k), k)
				cs, c := make([]float32, n), make([]float32, m*n)
				cpu0 := processCPU()
				for b.Loop() {
					I8GemmF32(&pa, pb, cs, nil, c, n, false)
				}
				reportRate(b, 2*float64(m*n*k), "GOP", cpu0)
			})
		}
		return true
	})
}

// BenchmarkQuantizeI8A measures dynamic per-token quantization and packing
// of the activations (part of every int8 Linear call).
func BenchmarkQuantizeI8A(b *testing.B) {
	ForEach("i8gemm", func(name string) bool {
		for _, s := range i8BenchShapes {
			m, k := s[0], s[1]
			b.Run(fmt.Sprintf("%s/M=%d,K=%d", name, m, k), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 1))
				x := make([]float32, m*k)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				var pa I8PackedA
				cpu0 := processCPU()
				for b.Loop() {
					QuantizeI8A(m, k, x, k, 0, nil, &pa)
				}
				reportRate(b, float64(m*k), "Gelem", cpu0)
			})
		}
		return true
	})
}

// reportRate reports the rate of b.N operations of work units each, in
// billions per wall-clock second (unit+"/s") and, where the platform reports
// CPU time, per CPU second (unit+"/cpu-s": the figure that stays meaningful
// on a machine shared with other work). cpu0 is processCPU() before the
// loop.
func reportRate(b *testing.B, work float64, unit string, cpu0 time.Duration) {
	total := work * float64(b.N) / 1e9
	b.ReportMetric(total/b.Elapsed().Seconds(), unit+"/s")
	if cpu := processCPU() - cpu0; cpu > 0 && cpu0 > 0 {
		b.ReportMetric(total/cpu.Seconds(), unit+"/cpu-s")
	}
}
