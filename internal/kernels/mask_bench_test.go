package kernels

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkMaskScale masks a 1,024×576 activation (a rank-8 LoRA adapter's
// input at B=4, T=256, SmolLM2 width) in place, reporting CPU time per
// element:
//
//	go test ./internal/kernels -run '^$' -bench MaskScale -cpu 1
func BenchmarkMaskScale(b *testing.B) {
	const n = 1024 * 576
	x := make([]float32, n)
	mask := make([]uint64, n/64)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range mask {
		mask[i] = rng.Uint64()
	}
	ForEach("mask", func(name string) bool {
		b.Run(name, func(b *testing.B) {
			c0 := int64(processCPU())
			for b.Loop() {
				MaskScale(x, x, mask, 0, 1.25)
			}
			b.ReportMetric(float64(int64(processCPU())-c0)/float64(b.N)/n, "cpu-ns/element")
		})
		return true
	})
}
