package kernels

// Sgemm follows the GotoBLAS/BLIS scheme. op(A) is copied ("packed") into
// micro-panels of sgemmMR rows and op(B) into micro-panels of sgemmNR columns,
// both k-major, so the micro-kernel reads one layout whatever the transposes
// and strides, streams its operands with unit stride, and never handles a
// ragged edge: panels are padded with zeros, and a tile that hangs over the
// edge of C is computed into a small buffer and copied back. The micro-kernel
// (assembly on AVX2+FMA CPUs, Go elsewhere) computes a 6×16 tile of C over
// sgemmKC steps of k at a time; on AVX-512 CPUs a 12×32 kernel reads two
// panels of each operand at once (sgemm512.go). The loops around it follow
// the files below:
//
//	sgemm.go            API, argument checks, choice of path
//	sgemm_driver.go     blocking, lazily packed shared buffers, threads
//	sgemm_pack.go       packing routines
//	sgemm_small.go      products too small (or too thin) to be worth packing
//	sgemm_generic*.go   the portable micro-kernel
//	sgemm_amd64.{go,s}  the AVX2+FMA micro-kernel and packers (avo, _asm/sgemm)
//	sgemm512*.go, .s    the AVX-512 micro-kernels, their tiling and blocking (avo, _asm/sgemm512)

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major float32 matrices,
// op(A) is m×k, op(B) is k×n, C is m×n; transA/transB select Aᵀ/Bᵀ; lda/ldb/ldc are row strides.
//
// As in BLAS, beta == 0 overwrites C without reading it (NaNs in C do not
// propagate), alpha == 0 or k == 0 only scales C by beta, and m == 0 or n == 0
// does nothing. Sgemm panics on negative sizes, on a leading dimension
// smaller than its matrix's row width, and on slices too short for their
// matrix. It is safe to call from many goroutines at once; large products are
// split over runtime.GOMAXPROCS cores, small ones run on the caller's.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkSgemm(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if alpha == 0 || k == 0 {
		scaleMatrix(m, n, beta, c, ldc)
		return
	}
	if sgemmSmall(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	sgemmPacked(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// SgemmBias computes C = op(A)·op(B) + bias, the bias (n floats) added to
// every row of C, which is overwritten (as by Sgemm with alpha 1 and beta
// 0): a linear layer's forward pass. On the AVX-512 path the micro-kernel
// starts each tile from the bias, which saves the pass over C that filling
// it with the bias first (and adding the product with beta 1) takes;
// elsewhere it does just that. It panics as Sgemm does, and on a bias
// shorter than n.
func SgemmBias(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, bias []float32, c []float32, ldc int) {
	checkSgemm(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if len(bias) < n {
		panic("kernels: SgemmBias: insufficient length of bias")
	}
	if m == 0 || n == 0 {
		return
	}
	if sgemmAVX512 && k > 0 && m > 1 && n > 1 && m*n*k > sgemmSmallWorkAVX2 {
		sgemmPackedBias(sgemmDefaultBlocking(), transA, transB, m, n, k, 1, a, lda, b, ldb, 0, c, ldc, bias[:n])
		return
	}
	biasRowsLoops.Run(0, biasRowsBody{c, bias[:n], ldc}, m, max(1, biasRowsGrain/n))
	Sgemm(transA, transB, m, n, k, 1, a, lda, b, ldb, 1, c, ldc)
}

// biasRowsGrain is the number of floats of C one item of the bias fill
// covers: 256 KiB.
const biasRowsGrain = 1 << 16

// biasRowsBody copies the bias into rows [lo, hi) of C.
type biasRowsBody struct {
	c, bias []float32
	ldc     int
}

func (bd *biasRowsBody) Chunk(lo, hi int) {
	for r := lo; r < hi; r++ {
		copy(bd.c[r*bd.ldc:r*bd.ldc+len(bd.bias)], bd.bias)
	}
}

var biasRowsLoops Chunks[biasRowsBody, *biasRowsBody]

// checkSgemm panics as gonum's BLAS does, with the same conditions in the same
// order, so that callers switching between the two see the same contract.
func checkSgemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	switch {
	case m < 0:
		panic("kernels: Sgemm: m < 0")
	case n < 0:
		panic("kernels: Sgemm: n < 0")
	case k < 0:
		panic("kernels: Sgemm: k < 0")
	}
	if (transA && lda < max(1, m)) || (!transA && lda < max(1, k)) {
		panic("kernels: Sgemm: bad leading dimension of A")
	}
	if (transB && ldb < max(1, k)) || (!transB && ldb < max(1, n)) {
		panic("kernels: Sgemm: bad leading dimension of B")
	}
	if ldc < max(1, n) {
		panic("kernels: Sgemm: bad leading dimension of C")
	}
	if m == 0 || n == 0 {
		return
	}
	// Stored A is k×m when transposed, m×k otherwise; likewise B.
	if (transA && len(a) < (k-1)*lda+m) || (!transA && len(a) < (m-1)*lda+k) {
		panic("kernels: Sgemm: insufficient length of a")
	}
	if (transB && len(b) < (n-1)*ldb+k) || (!transB && len(b) < (k-1)*ldb+n) {
		panic("kernels: Sgemm: insufficient length of b")
	}
	if len(c) < (m-1)*ldc+n {
		panic("kernels: Sgemm: insufficient length of c")
	}
}

// scaleMatrix computes C = beta·C for an m×n matrix; beta == 0 clears C
// rather than multiplying, so NaN and Inf do not survive.
func scaleMatrix(m, n int, beta float32, c []float32, ldc int) {
	if beta == 1 {
		return
	}
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}
