//go:build (amd64 && !amd64.v3) || 386

package kernels

import "unsafe"

// goKernelCols is how many tile columns goKernelColumns computes.
//
// Without FMA every product a·b needs its own register until it is added
// (MULSS overwrites its operand), and the compiler schedules a block's
// multiplications before its additions; with 15 usable XMM registers, one
// column at a time fits: six accumulators, six products and one value of B,
// six independent addition chains for the two adders. Measured per core
// (thread CPU time, kc=256, L1-resident panels): 6×1 ~10–12 GFLOP/s; 6×2
// 7.6, 2×4 5.7 and 1×8 4.8 (they spill); 1×4 6.4, 2×2 4.7.
const goKernelCols = 1

func goKernelColumns(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	c0, c1, c2, c3, c4, c5 := dot6x1(kc, a, b)
	storeColumn(c, ldc, alpha, beta, c0, c1, c2, c3, c4, c5)
}

// dot6x1 returns the column Σ_p a[p·6+0..5]·b[p·16] over kc steps, kc ≥ 1.
// It addresses the panels through unsafe pointers, after checking their
// lengths once: slice indexing costs ~19 integer instructions per step, as
// many as the arithmetic. (The pointers never move past the last step, so
// -race's checkptr accepts them.) It is not inlined: inside the caller's
// loop the register allocator spills the accumulators.
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
