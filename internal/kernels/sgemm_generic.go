package kernels

import "unsafe"

// sgemmKernelGo is the portable micro-kernel: the same contract as
// sgemmKernel6x16AVX2 (C[0:6, 0:16] = alpha·A·B + beta·C over kc steps of
// packed panels, C not read when beta == 0), for slices.
//
// Scalar Go has 16 XMM registers and no FMA (SSE two-operand code), and the
// compiler schedules a block's multiplications before its additions, so
// every product needs its own register until it is added. The tile is
// therefore computed one column at a time: six accumulators, six products
// and one value of B fit without spilling, and six independent addition
// chains keep both adders busy. Measured per core (thread CPU time, kc=256,
// L1-resident panels): 6×1 sub-tiles 9.1 GFLOP/s, 1×4 6.4, 2×4 5.7 (spills),
// 1×8 4.8 (spills), 2×2 4.7; unsafe pointer loops gained nothing.
func sgemmKernelGo(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	a = a[:kc*sgemmMR]
	b = b[:kc*sgemmNR]
	_ = c[(sgemmMR-1)*ldc+sgemmNR-1]
	for j := range sgemmNR {
		c0, c1, c2, c3, c4, c5 := dot6x1(kc, a, b[j:])
		if beta == 0 {
			c[j] = alpha * c0
			c[ldc+j] = alpha * c1
			c[2*ldc+j] = alpha * c2
			c[3*ldc+j] = alpha * c3
			c[4*ldc+j] = alpha * c4
			c[5*ldc+j] = alpha * c5
			continue
		}
		c[j] = alpha*c0 + beta*c[j]
		c[ldc+j] = alpha*c1 + beta*c[ldc+j]
		c[2*ldc+j] = alpha*c2 + beta*c[2*ldc+j]
		c[3*ldc+j] = alpha*c3 + beta*c[3*ldc+j]
		c[4*ldc+j] = alpha*c4 + beta*c[4*ldc+j]
		c[5*ldc+j] = alpha*c5 + beta*c[5*ldc+j]
	}
}

// dot6x1 returns the column Σ_p a[p·6+0..5]·b[p·16] over kc steps, kc ≥ 1.
// It addresses the panels through unsafe pointers, after checking their
// lengths once: slice indexing costs ~19 integer instructions per step, as
// many as the arithmetic. (The pointers never move past the last step, so
// -race's checkptr accepts them.) It is not
// inlined: inside the caller's loop the register allocator spills the
// accumulators.
//
//go:noinline
func dot6x1(kc int, a, b []float32) (c0, c1, c2, c3, c4, c5 float32) {
	_ = a[kc*sgemmMR-1]
	_ = b[(kc-1)*sgemmNR]
	pa, pb := unsafe.Pointer(&a[0]), unsafe.Pointer(&b[0])
	for kc >= 2 {
		x := (*[2 * sgemmMR]float32)(pa)
		b0 := *(*float32)(pb)
		b1 := *(*float32)(unsafe.Add(pb, sgemmNR*4))
		c0 += x[0] * b0
		c1 += x[1] * b0
		c2 += x[2] * b0
		c3 += x[3] * b0
		c4 += x[4] * b0
		c5 += x[5] * b0
		c0 += x[6] * b1
		c1 += x[7] * b1
		c2 += x[8] * b1
		c3 += x[9] * b1
		c4 += x[10] * b1
		c5 += x[11] * b1
		if kc -= 2; kc == 0 {
			return
		}
		pa = unsafe.Add(pa, 2*sgemmMR*4)
		pb = unsafe.Add(pb, 2*sgemmNR*4)
	}
	x := (*[sgemmMR]float32)(pa)
	b0 := *(*float32)(pb)
	c0 += x[0] * b0
	c1 += x[1] * b0
	c2 += x[2] * b0
	c3 += x[3] * b0
	c4 += x[4] * b0
	c5 += x[5] * b0
	return
}
