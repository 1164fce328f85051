//go:build !amd64 || purego

package kernels

// sgemmKernel512 is the portable form of the AVX-512 kernels' contract (see
// sgemm512_amd64.go): the tile computed 6×16 at a time by the Go kernel. It
// runs only in tests here, where sgemmAVX512 is constant false.
func sgemmKernel512(aPanels, bPanels, kc int, a []float32, aStride int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32) {
	for i := range aPanels {
		for h := range bPanels {
			sgemmKernelGo(kc, a[i*aStride:], b[h*bStride:], c[i*sgemmMR*ldc+h*sgemmNR:], ldc, alpha, beta)
		}
	}
}
