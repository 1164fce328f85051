//go:build amd64 && !purego

package kernels

// The AVX-512 micro-kernels (sgemmKernel{12,6}x{32,16}AVX512) are generated
// with avo; their declarations are in sgemm512_amd64_stubs.go and their code
// in sgemm512_amd64.s, both generated, and they run when sgemmAVX512 is set
// (the "sgemm/avx512" implementation of the registry, impl.go). To change them, edit _asm/sgemm512/main.go and
// regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./sgemm512 -out ../sgemm512_amd64.s -stubs ../sgemm512_amd64_stubs.go -pkg kernels"

// sgemmKernel512 computes the (aPanels·6)×(bPanels·16) tile C =
// alpha·A·B + beta·C with the AVX-512 kernel of that size: A is aPanels
// packed A micro-panels aStride floats apart, B bPanels packed B
// micro-panels bStride floats apart (1 or 2 of each). A non-nil bias (at
// least bPanels·16 floats) is added to every row of the product before
// alpha scales it: C = alpha·(A·B + bias) + beta·C. The slice expressions
// are the bounds checks that keep the assembly in bounds. When the AVX-512
// implementation is not enabled it runs the portable form.
func sgemmKernel512(aPanels, bPanels, kc int, a []float32, aStride int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	if !sgemmAVX512 {
		sgemmKernel512Go(aPanels, bPanels, kc, a, aStride, b, bStride, c, ldc, alpha, beta, bias)
		return
	}
	_ = a[(aPanels-1)*aStride+kc*sgemmMR-1]
	_ = b[(bPanels-1)*bStride+kc*sgemmNR-1]
	_ = c[(aPanels*sgemmMR-1)*ldc+bPanels*sgemmNR-1]
	if bias != nil {
		_ = bias[bPanels*sgemmNR-1]
		switch {
		case aPanels == 2 && bPanels == 2:
			sgemmKernel12x32BiasAVX512(kc, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
		case aPanels == 2:
			sgemmKernel12x16BiasAVX512(kc, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
		case bPanels == 2:
			sgemmKernel6x32BiasAVX512(kc, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
		default:
			sgemmKernel6x16BiasAVX512(kc, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
		}
		return
	}
	switch {
	case aPanels == 2 && bPanels == 2:
		sgemmKernel12x32AVX512(kc, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta)
	case aPanels == 2:
		sgemmKernel12x16AVX512(kc, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta)
	case bPanels == 2:
		sgemmKernel6x32AVX512(kc, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta)
	default:
		sgemmKernel6x16AVX512(kc, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta)
	}
}

// sgemmKernel512Direct is sgemmKernel512 for 12 rows of A read where they
// are stored (row r at a[r·lda:], k steps contiguous) instead of from packed
// panels, with 1 or 2 packed B panels.
func sgemmKernel512Direct(bPanels, kc int, a []float32, lda int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	if !sgemmAVX512 {
		sgemmKernel512DirectGo(bPanels, kc, a, lda, b, bStride, c, ldc, alpha, beta, bias)
		return
	}
	_ = a[(sgemmMR512-1)*lda+kc-1]
	_ = b[(bPanels-1)*bStride+kc*sgemmNR-1]
	_ = c[(sgemmMR512-1)*ldc+bPanels*sgemmNR-1]
	switch {
	case bias != nil && bPanels == 2:
		_ = bias[2*sgemmNR-1]
		sgemmKernel12x32DirectBiasAVX512(kc, &a[0], lda, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
	case bias != nil:
		_ = bias[sgemmNR-1]
		sgemmKernel12x16DirectBiasAVX512(kc, &a[0], lda, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
	case bPanels == 2:
		sgemmKernel12x32DirectAVX512(kc, &a[0], lda, &b[0], bStride, &c[0], ldc, alpha, beta)
	default:
		sgemmKernel12x16DirectAVX512(kc, &a[0], lda, &b[0], bStride, &c[0], ldc, alpha, beta)
	}
}

// sgemmKernel512DirectT is sgemmKernel512 for 12 rows of a transposed A read
// where they are stored (k step p of the rows is a[p·lda:p·lda+12]), with 1
// or 2 packed B panels and no bias.
func sgemmKernel512DirectT(bPanels, kc int, a []float32, lda int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32) {
	if !sgemmAVX512 {
		sgemmKernel512DirectTGo(bPanels, kc, a, lda, b, bStride, c, ldc, alpha, beta)
		return
	}
	_ = a[(kc-1)*lda+sgemmMR512-1]
	_ = b[(bPanels-1)*bStride+kc*sgemmNR-1]
	_ = c[(sgemmMR512-1)*ldc+bPanels*sgemmNR-1]
	if bPanels == 2 {
		sgemmKernel12x32DirectTAVX512(kc, &a[0], lda, &b[0], bStride, &c[0], ldc, alpha, beta)
		return
	}
	sgemmKernel12x16DirectTAVX512(kc, &a[0], lda, &b[0], bStride, &c[0], ldc, alpha, beta)
}
