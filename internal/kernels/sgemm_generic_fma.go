//go:build !((amd64 && !amd64.v3) || 386)

package kernels

import "unsafe"

// goKernelCols is how many tile columns goKernelColumns computes.
//
// Where the compiler fuses a*b+c into one FMA that reads a from memory, a
// product needs no register of its own, so two columns fit: twelve
// accumulators and two values of B, twelve independent chains to cover the
// FMA latency. Measured per core with GOAMD64=v3 (thread CPU time, kc=256,
// L1-resident panels): 6×2 14 GFLOP/s, 6×1 10 (latency-bound).
const goKernelCols = 2

func goKernelColumns(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	c00, c10, c20, c30, c40, c50, c01, c11, c21, c31, c41, c51 := dot6x2(kc, a, b)
	storeColumn(c, ldc, alpha, beta, c00, c10, c20, c30, c40, c50)
	storeColumn(c[1:], ldc, alpha, beta, c01, c11, c21, c31, c41, c51)
}

// dot6x2 returns the columns Σ_p a[p·6+0..5]·b[p·16+0..1] over kc steps,
// kc ≥ 1. It addresses the panels through unsafe pointers, after checking
// their lengths once. (The pointers never move past the last step, so
// -race's checkptr accepts them.) It is not inlined, to keep the caller's
// registers out of its way.
//
//go:noinline
func dot6x2(kc int, a, b []float32) (c00, c10, c20, c30, c40, c50, c01, c11, c21, c31, c41, c51 float32) {
	_ = a[kc*sgemmMR-1]
	_ = b[(kc-1)*sgemmNR+1]
	pa, pb := unsafe.Pointer(&a[0]), unsafe.Pointer(&b[0])
	for {
		x := (*[sgemmMR]float32)(pa)
		y := (*[2]float32)(pb)
		b0, b1 := y[0], y[1]
		c00 += x[0] * b0
		c01 += x[0] * b1
		c10 += x[1] * b0
		c11 += x[1] * b1
		c20 += x[2] * b0
		c21 += x[2] * b1
		c30 += x[3] * b0
		c31 += x[3] * b1
		c40 += x[4] * b0
		c41 += x[4] * b1
		c50 += x[5] * b0
		c51 += x[5] * b1
		if kc--; kc == 0 {
			return
		}
		pa = unsafe.Add(pa, sgemmMR*4)
		pb = unsafe.Add(pb, sgemmNR*4)
	}
}
