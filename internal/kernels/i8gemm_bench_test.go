package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
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
				for b.Loop() {
					I8GemmF32(&pa, pb, cs, nil, c, n, false)
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
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
				for b.Loop() {
					QuantizeI8A(m, k, x, k, 0, nil, &pa)
				}
				b.ReportMetric(float64(m*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
			})
		}
		return true
	})
}
