package kernels

// sgemmKernelGo is the portable micro-kernel: the same contract as
// sgemmKernel6x16AVX2 (C[0:6, 0:16] = alpha·A·B + beta·C over kc steps of
// packed panels, C not read when beta == 0), for slices.
//
// Scalar Go has 16 XMM registers and no FMA (SSE two-operand code), so the
// 6×16 tile is computed as twelve 2×4 sub-tiles: 8 accumulators, 2 values
// of A and 4 of B stay in registers, and each k step costs 6 loads for 16
// flops. Larger sub-tiles spill (measured: see sgemm_bench_test.go).
func sgemmKernelGo(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	a = a[:kc*sgemmMR]
	b = b[:kc*sgemmNR]
	_ = c[5*ldc+15]
	for ii := 0; ii < sgemmMR; ii += 2 {
		for jj := 0; jj < sgemmNR; jj += 4 {
			c00, c01, c02, c03, c10, c11, c12, c13 := dot2x4(kc, a[ii:], b[jj:])
			r0 := (*[4]float32)(c[ii*ldc+jj:])
			r1 := (*[4]float32)(c[(ii+1)*ldc+jj:])
			if beta == 0 {
				r0[0], r0[1], r0[2], r0[3] = alpha*c00, alpha*c01, alpha*c02, alpha*c03
				r1[0], r1[1], r1[2], r1[3] = alpha*c10, alpha*c11, alpha*c12, alpha*c13
				continue
			}
			r0[0] = alpha*c00 + beta*r0[0]
			r0[1] = alpha*c01 + beta*r0[1]
			r0[2] = alpha*c02 + beta*r0[2]
			r0[3] = alpha*c03 + beta*r0[3]
			r1[0] = alpha*c10 + beta*r1[0]
			r1[1] = alpha*c11 + beta*r1[1]
			r1[2] = alpha*c12 + beta*r1[2]
			r1[3] = alpha*c13 + beta*r1[3]
		}
	}
}

// dot2x4 returns the 2×4 block Σ_p a[p·6+0..1]·b[p·16+0..3] over kc steps.
func dot2x4(kc int, a, b []float32) (c00, c01, c02, c03, c10, c11, c12, c13 float32) {
	for p := range kc {
		pa := (*[2]float32)(a[p*sgemmMR:])
		pb := (*[4]float32)(b[p*sgemmNR:])
		a0, a1 := pa[0], pa[1]
		b0, b1, b2, b3 := pb[0], pb[1], pb[2], pb[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
	}
	return
}
