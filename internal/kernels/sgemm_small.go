package kernels

// The largest m·n·k computed without packing: below it, copying the operands
// and setting up the blocked path cost more than the blocked kernel saves.
// Measured crossovers (one core, square shapes): about 7³ with the assembly
// kernel, whose blocked path already beats the plain loops 3× at 12³, and
// about 12³ with the Go one.
const (
	sgemmSmallWorkAVX2 = 7 * 7 * 7
	sgemmSmallWorkGo   = 12 * 12 * 12
)

// sgemmSmall computes products for which packing does not pay, and reports
// whether it did: matrix-vector shapes (m == 1 or n == 1, as in attention
// over one query or token-by-token generation), which touch each element of
// the matrix once, and tiny products, on the caller's goroutine, except for
// large matrix-vector products, which are split by ranges of outputs over
// threads. alpha != 0, k > 0, m > 0 and n > 0.
func sgemmSmall(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	switch {
	case m == 1:
		// c (row) = alpha·x·op(B) + beta·c, x the row of op(A); x's
		// stride is lda when A is stored transposed.
		incA := 1
		if transA {
			incA = lda
		}
		if t := gemvThreads(n, k); t > 1 {
			sgemvParallel(t, gemvRowMode, transB, n, k, alpha, b, ldb, a, incA, beta, c[:n], 1)
			break
		}
		gemvRow(transB, n, k, alpha, a, incA, b, ldb, beta, c[:n])
	case n == 1:
		// c (column) = alpha·op(A)·y + beta·c: the same product with the
		// roles of A and B swapped, since Cᵀ = op(B)ᵀ·op(A)ᵀ.
		incB := ldb
		if transB {
			incB = 1
		}
		if t := gemvThreads(m, k); t > 1 {
			sgemvParallel(t, gemvColMode, transA, m, k, alpha, a, lda, b, incB, beta, c, ldc)
			break
		}
		gemvCol(transA, m, k, alpha, a, lda, b, incB, beta, c, ldc)
	case m*n*k <= sgemmSmallWorkGo && (!sgemmAsm() || m*n*k <= sgemmSmallWorkAVX2):
		sgemmNaive(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	default:
		return false
	}
	return true
}

// gemvChunk is how many elements of a strided vector are gathered into a
// contiguous buffer at a time, so that the dot products run on Dot.
const gemvChunk = 256

// gemvRow computes c[j] = alpha·Σ_p x[p·incX]·op(B)[p][j] + beta·c[j] for
// j < len(c) = n.
func gemvRow(transB bool, n, k int, alpha float32, x []float32, incX int, b []float32, ldb int, beta float32, c []float32) {
	if !transB {
		// Row p of B is contiguous: accumulate alpha·x[p]·B[p] into c.
		scaleMatrix(1, n, beta, c, n)
		for p := range k {
			Axpy(alpha*x[p*incX], b[p*ldb:p*ldb+n], c)
		}
		return
	}
	// op(B)[p][j] = b[j·ldb + p]: one dot product per output, over chunks
	// of x gathered when it is strided.
	var buf [gemvChunk]float32
	for p0 := 0; p0 < k; p0 += gemvChunk {
		kk := min(gemvChunk, k-p0)
		xs := x[p0*incX:]
		if incX != 1 {
			for p := range kk {
				buf[p] = xs[p*incX]
			}
			xs = buf[:]
		}
		xs = xs[:kk]
		for j := range c {
			d := alpha * Dot(xs, b[j*ldb+p0:j*ldb+p0+kk])
			switch {
			case p0 > 0:
				c[j] += d
			case beta == 0:
				c[j] = d
			default:
				c[j] = d + beta*c[j]
			}
		}
	}
}

// gemvCol computes c[i·ldc] = alpha·Σ_p op(A)[i][p]·y[p·incY] + beta·c[i·ldc]
// for i < m.
func gemvCol(transA bool, m, k int, alpha float32, a []float32, lda int, y []float32, incY int, beta float32, c []float32, ldc int) {
	if transA {
		// op(A)[i][p] = a[p·lda + i]: row p of the stored A is contiguous.
		for i := range m {
			if beta == 0 {
				c[i*ldc] = 0
			} else {
				c[i*ldc] *= beta
			}
		}
		for p := range k {
			s := alpha * y[p*incY]
			row := a[p*lda : p*lda+m]
			if ldc == 1 {
				Axpy(s, row, c[:m])
				continue
			}
			for i, v := range row {
				c[i*ldc] += s * v
			}
		}
		return
	}
	// Rows of A are contiguous: dot products, over chunks of y gathered
	// when it is strided.
	var buf [gemvChunk]float32
	for p0 := 0; p0 < k; p0 += gemvChunk {
		kk := min(gemvChunk, k-p0)
		ys := y[p0*incY:]
		if incY != 1 {
			for p := range kk {
				buf[p] = ys[p*incY]
			}
			ys = buf[:]
		}
		ys = ys[:kk]
		for i := range m {
			d := alpha * Dot(a[i*lda+p0:i*lda+p0+kk], ys)
			switch {
			case p0 > 0:
				c[i*ldc] += d
			case beta == 0:
				c[i*ldc] = d
			default:
				c[i*ldc] = d + beta*c[i*ldc]
			}
		}
	}
}

// sgemmNaive is the straightforward triple loop, ordered so that the inner
// loop runs along contiguous memory for each transpose combination, and
// written out inline: at these sizes a call per row (to Axpy, say) costs
// more than the row's arithmetic.
func sgemmNaive(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if transB {
		// Row j of the stored B is column j of op(B): dot products.
		for i := range m {
			crow := c[i*ldc : i*ldc+n]
			for j := range crow {
				brow := b[j*ldb : j*ldb+k]
				var s0, s1 float32
				if transA {
					for p, v := range brow {
						s0 += a[p*lda+i] * v
					}
				} else {
					arow := a[i*lda : i*lda+k]
					p := 0
					for ; p+1 < len(brow); p += 2 {
						s0 += arow[p] * brow[p]
						s1 += arow[p+1] * brow[p+1]
					}
					if p < len(brow) {
						s0 += arow[p] * brow[p]
					}
				}
				if beta == 0 {
					crow[j] = alpha * (s0 + s1)
				} else {
					crow[j] = alpha*(s0+s1) + beta*crow[j]
				}
			}
		}
		return
	}
	// Rows of op(B) are contiguous: c[i] accumulates alpha·op(A)[i][p]·B[p].
	scaleMatrix(m, n, beta, c, ldc)
	for i := range m {
		crow := c[i*ldc : i*ldc+n]
		for p := range k {
			var s float32
			if transA {
				s = alpha * a[p*lda+i]
			} else {
				s = alpha * a[i*lda+p]
			}
			brow := b[p*ldb : p*ldb+n]
			for j, v := range brow {
				crow[j] += s * v
			}
		}
	}
}
