//go:build amd64 && !purego

package kernels

import "testing"

// BenchmarkI8GemmKernelVNNI measures one core's VNNI micro-kernel, ZMM and
// YMM forms, on L1-resident panels.
func BenchmarkI8GemmKernelVNNI(b *testing.B) {
	if !hasAVX512VNNI {
		b.Skip("no AVX-512 VNNI")
	}
	kg := 256
	a, bb := make([]int8, 2*kg*16), make([]int8, kg*64)
	corr := make([]int32, i8NR)
	var tile [2 * i8MR * i8NR]int32
	for _, v := range []struct {
		name string
		rows int
		f    func(kg int, a, b *int8, corr *int32, c *int32, ldc int, add bool)
	}{{"zmm", 4, i8gemmKernelVNNIZI32}, {"ymm", 4, i8gemmKernelVNNIYI32}, {"zmm8", 8, i8gemmKernelVNNIZ8I32}} {
		b.Run(v.name, func(b *testing.B) {
			cpu0 := processCPU()
			for b.Loop() {
				v.f(kg, &a[0], &bb[0], &corr[0], &tile[0], i8NR, false)
			}
			reportRate(b, 2*float64(v.rows)*i8NR*4*float64(kg), "GOP", cpu0)
		})
	}
}

// BenchmarkI8GemmKernel measures one core's micro-kernel on L1-resident panels.
func BenchmarkI8GemmKernel(b *testing.B) {
	kg := 256
	a, bb := make([]int8, kg*32), make([]int8, kg*64)
	var tile [i8MR * i8NR]int32
	b.Run("generic", func(b *testing.B) {
		for b.Loop() {
			i8gemmKernelGeneric(kg, a, bb, &tile)
		}
		b.ReportMetric(2*i8MR*i8NR*4*float64(kg)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
	})
	if cpuLevel < LevelAVX2 {
		return
	}
	b.Run("signtrick", func(b *testing.B) {
		for b.Loop() {
			i8gemmKernel4x16I32AVX2(kg, &a[0], &bb[0], &tile[0], i8NR, false)
		}
		b.ReportMetric(2*i8MR*i8NR*4*float64(kg)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
	})
}

func BenchmarkI8GemmKernelW16(b *testing.B) {
	if cpuLevel < LevelAVX2 {
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
