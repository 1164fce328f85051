package kernels

// sgemmKernelGo is the portable micro-kernel: the same contract as
// sgemmKernel6x16AVX2 (C[0:6, 0:16] = alpha·A·B + beta·C over kc steps of
// packed panels, C not read when beta == 0), for slices. It computes the
// tile goKernelCols columns at a time, with a loop chosen by build target:
//
//   - sgemm_generic_sse.go, for amd64 below GOAMD64=v3 (and 386): no FMA,
//     two-operand SSE code, 15 usable XMM registers, one column at a time.
//   - sgemm_generic_fma.go, for every target where the compiler fuses
//     a*b+c into FMA with a memory operand (GOAMD64=v3, arm64, …): two
//     columns at a time.
func sgemmKernelGo(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	a = a[:kc*sgemmMR]
	b = b[:kc*sgemmNR]
	_ = c[(sgemmMR-1)*ldc+sgemmNR-1]
	for j := 0; j < sgemmNR; j += goKernelCols {
		goKernelColumns(kc, a, b[j:], c[j:], ldc, alpha, beta)
	}
}

// storeColumn sets c[r·ldc] = alpha·v_r + beta·c[r·ldc] for the six rows of
// a tile column, without reading C when beta == 0.
func storeColumn(c []float32, ldc int, alpha, beta float32, v0, v1, v2, v3, v4, v5 float32) {
	_ = c[5*ldc]
	if beta == 0 {
		c[0] = alpha * v0
		c[ldc] = alpha * v1
		c[2*ldc] = alpha * v2
		c[3*ldc] = alpha * v3
		c[4*ldc] = alpha * v4
		c[5*ldc] = alpha * v5
		return
	}
	c[0] = alpha*v0 + beta*c[0]
	c[ldc] = alpha*v1 + beta*c[ldc]
	c[2*ldc] = alpha*v2 + beta*c[2*ldc]
	c[3*ldc] = alpha*v3 + beta*c[3*ldc]
	c[4*ldc] = alpha*v4 + beta*c[4*ldc]
	c[5*ldc] = alpha*v5 + beta*c[5*ldc]
}
