package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Run with
//
//	go test -run '^$' -bench 'Dot|Axpy|Scale|Max|Sum|Exp' ./internal/kernels
//
// Sizes: a short attention row, a hidden dimension, a long row; all stay in
// L1/L2, so the numbers measure the kernels rather than memory.
var benchSizes = []int{64, 1024, 16384}

// benchVec runs f for each size and implementation, reporting bytes moved
// per call (streams·4·n) and elements per second.
func benchVec(b *testing.B, streams int, f func(b *testing.B, n int)) {
	benchVecBytes(b, 4*streams, f)
}

// benchVecBytes is benchVec for routines that move bytesPerElem bytes per
// element (DotI8: a float32 and an int8).
func benchVecBytes(b *testing.B, bytesPerElem int, f func(b *testing.B, n int)) {
	for _, n := range benchSizes {
		ForEach("vec", func(name string) bool {
			return b.Run(fmt.Sprintf("n=%d/%s", n, name), func(b *testing.B) {
				b.SetBytes(int64(bytesPerElem * n))
				f(b, n)
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
			})
		})
	}
}

func benchData(n int, lo, hi float32) []float32 {
	x := make([]float32, n)
	randFill(rand.New(rand.NewPCG(uint64(n), 1)), x, lo, hi)
	return x
}

var sink float32

func BenchmarkDot(b *testing.B) {
	benchVec(b, 2, func(b *testing.B, n int) {
		x, y := benchData(n, -1, 1), benchData(n, -1, 1)
		for b.Loop() {
			sink = Dot(x, y)
		}
	})
}

func BenchmarkDotI8(b *testing.B) {
	benchVecBytes(b, 5, func(b *testing.B, n int) {
		x := benchData(n, -1, 1)
		w := make([]int8, n)
		for i := range w {
			w[i] = int8(i*7%255 - 127)
		}
		for b.Loop() {
			sink = DotI8(x, w)
		}
	})
}

func BenchmarkAxpy(b *testing.B) {
	benchVec(b, 3, func(b *testing.B, n int) {
		x, y := benchData(n, -1, 1), benchData(n, -1, 1)
		for b.Loop() {
			Axpy(1e-3, x, y)
		}
	})
}

func BenchmarkScale(b *testing.B) {
	benchVec(b, 2, func(b *testing.B, n int) {
		x := benchData(n, -1, 1)
		for b.Loop() {
			Scale(1.0000001, x)
		}
	})
}

func BenchmarkMax(b *testing.B) {
	benchVec(b, 1, func(b *testing.B, n int) {
		x := benchData(n, -10, 10)
		for b.Loop() {
			sink = Max(x)
		}
	})
}

func BenchmarkSum(b *testing.B) {
	benchVec(b, 1, func(b *testing.B, n int) {
		x := benchData(n, -1, 1)
		for b.Loop() {
			sink = Sum(x)
		}
	})
}

func BenchmarkExp(b *testing.B) {
	benchVec(b, 2, func(b *testing.B, n int) {
		src, dst := benchData(n, -20, 5), make([]float32, n)
		for b.Loop() {
			Exp(dst, src)
		}
	})
}

func BenchmarkExpSubSum(b *testing.B) {
	benchVec(b, 2, func(b *testing.B, n int) {
		src, dst := benchData(n, -20, 5), make([]float32, n)
		for b.Loop() {
			sink = ExpSubSum(dst, src, 5)
		}
	})
}
