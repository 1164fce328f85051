//go:build !amd64 || purego

package kernels

// sgemmKernel512 runs the portable form of the AVX-512 kernels' contract
// (sgemmKernel512Go): there is no assembly here.
func sgemmKernel512(aPanels, bPanels, kc int, a []float32, aStride int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	sgemmKernel512Go(aPanels, bPanels, kc, a, aStride, b, bStride, c, ldc, alpha, beta, bias)
}

// sgemmKernel512Direct runs the portable form of the direct-A kernels'
// contract (sgemmKernel512DirectGo).
func sgemmKernel512Direct(bPanels, kc int, a []float32, lda int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	sgemmKernel512DirectGo(bPanels, kc, a, lda, b, bStride, c, ldc, alpha, beta, bias)
}

// sgemmKernel512DirectT runs the portable form of the transposed direct-A
// kernels' contract (sgemmKernel512DirectTGo).
func sgemmKernel512DirectT(bPanels, kc int, a []float32, lda int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32) {
	sgemmKernel512DirectTGo(bPanels, kc, a, lda, b, bStride, c, ldc, alpha, beta)
}
