package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

var i8BenchShapes = [][3]int{{256, 1024, 1024}, {1024, 1024, 4096}}

// BenchmarkI8GemmKernel measures one core's micro-kernel on L1-resident panels.
func BenchmarkI8GemmKernel(b *testing.B) {
	forEachImplB(b, func(b *testing.B) {
		kg := 256
		a, bb := make([]int8, kg*32), make([]int8, kg*64)
		var tile [i8MR * i8NR]int32
		for b.Loop() {
			if useAVX2 { // the sign-trick kernel
				i8gemmKernel4x16I32AVX2(kg, &a[0], &bb[0], &tile[0], i8NR, false)
			} else {
				i8gemmKernelGeneric(kg, a, bb, &tile)
			}
		}
		b.ReportMetric(2*i8MR*i8NR*4*float64(kg)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
	})
}

// BenchmarkI8GemmF32 measures the packed product with fused dequantization
// (activations already quantized), with each assembly kernel.
func BenchmarkI8GemmF32(b *testing.B) {
	defer func(st, vnni bool) { I8SignTrick, i8UseVNNI = st, vnni }(I8SignTrick, i8UseVNNI)
	for _, l := range i8Layouts() {
		I8SignTrick, i8UseVNNI = l == i8LayoutI8, l == i8LayoutVNNI
		name := i8LayoutName(l)
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
	}
}

func BenchmarkI8GemmKernelW16(b *testing.B) {
	if !hasAVX2FMA {
		b.Skip("no assembly")
	}
	kp := 512
	a, bb := make([]int16, kp*8), make([]int16, kp*32)
	var tile [i8MR * i8NR]int32
	for b.Loop() {
		i8gemmKernelW16I32AVX2(kp, &a[0], &bb[0], &tile[0], i8NR, false)
	}
	b.ReportMetric(2*i8MR*i8NR*2*float64(kp)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
}

// BenchmarkQuantizeI8A measures dynamic per-token quantization and packing
// of the activations (part of every int8 Linear call).
func BenchmarkQuantizeI8A(b *testing.B) {
	defer func(st, vnni bool) { I8SignTrick, i8UseVNNI = st, vnni }(I8SignTrick, i8UseVNNI)
	for _, l := range i8Layouts() {
		I8SignTrick, i8UseVNNI = l == i8LayoutI8, l == i8LayoutVNNI
		for _, s := range i8BenchShapes {
			m, k := s[0], s[1]
			b.Run(fmt.Sprintf("%s/M=%d,K=%d", i8LayoutName(l), m, k), func(b *testing.B) {
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
	}
}
