//go:build unix

package kernels

import (
	"math/rand/v2"
	"syscall"
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
			c0 := cpuNanosK()
			for b.Loop() {
				MaskScale(x, x, mask, 0, 1.25)
			}
			b.ReportMetric(float64(cpuNanosK()-c0)/float64(b.N)/n, "cpu-ns/element")
		})
		return true
	})
}

// cpuNanosK is the CPU time the process has used: on the shared machine
// wall-clock rates mostly measure the other processes.
func cpuNanosK() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
