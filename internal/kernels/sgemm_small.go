package kernels

// sgemmSmallWork is the largest m·n·k computed without packing: below it,
// copying the operands costs more than the blocked kernel saves.
const sgemmSmallWork = 24 * 24 * 24

// sgemmSmall computes products for which packing does not pay, on the
// caller's goroutine, and reports whether it did: matrix-vector shapes
// (m == 1 or n == 1, as in attention over one query or token-by-token
// generation), which touch each element of the matrix once, and tiny
// products. alpha != 0, k > 0, m > 0 and n > 0.
func sgemmSmall(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	switch {
	case m == 1:
		// c (row) = alpha·x·op(B) + beta·c, x the row of op(A); x's
		// stride is lda when A is stored transposed.
		incA := 1
		if transA {
			incA = lda
		}
		gemvRow(transB, n, k, alpha, a, incA, b, ldb, beta, c[:n])
	case n == 1:
		// c (column) = alpha·op(A)·y + beta·c: the same product with the
		// roles of A and B swapped, since Cᵀ = op(B)ᵀ·op(A)ᵀ.
		incB := ldb
		if transB {
			incB = 1
		}
		gemvCol(transA, m, k, alpha, a, lda, b, incB, beta, c, ldc)
	case m*n*k <= sgemmSmallWork:
		sgemmNaive(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	default:
		return false
	}
	return true
}

// gemvRow computes c[j] = alpha·Σ_p x[p·incX]·op(B)[p][j] + beta·c[j] for
// j < len(c) = n.
func gemvRow(transB bool, n, k int, alpha float32, x []float32, incX int, b []float32, ldb int, beta float32, c []float32) {
	if transB {
		// op(B)[p][j] = b[j·ldb + p]: one dot product per output.
		for j := range c {
			d := dotStrided(x, incX, b[j*ldb:], 1, k)
			if beta == 0 {
				c[j] = alpha * d
			} else {
				c[j] = alpha*d + beta*c[j]
			}
		}
		return
	}
	// Row p of B is contiguous: accumulate alpha·x[p]·B[p] into c.
	scaleMatrix(1, n, beta, c, n)
	for p := range k {
		Axpy(alpha*x[p*incX], b[p*ldb:p*ldb+n], c)
	}
}

// gemvCol computes c[i·ldc] = alpha·Σ_p op(A)[i][p]·y[p·incY] + beta·c[i·ldc]
// for i < m.
func gemvCol(transA bool, m, k int, alpha float32, a []float32, lda int, y []float32, incY int, beta float32, c []float32, ldc int) {
	if !transA {
		for i := range m {
			d := dotStrided(a[i*lda:], 1, y, incY, k)
			if beta == 0 {
				c[i*ldc] = alpha * d
			} else {
				c[i*ldc] = alpha*d + beta*c[i*ldc]
			}
		}
		return
	}
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
}

// dotStrided returns Σ_p x[p·incX]·y[p·incY] for p < k.
func dotStrided(x []float32, incX int, y []float32, incY int, k int) float32 {
	if incX == 1 && incY == 1 {
		return Dot(x[:k], y[:k])
	}
	var s0, s1, s2, s3 float32
	p := 0
	for ; p+4 <= k; p += 4 {
		s0 += x[p*incX] * y[p*incY]
		s1 += x[(p+1)*incX] * y[(p+1)*incY]
		s2 += x[(p+2)*incX] * y[(p+2)*incY]
		s3 += x[(p+3)*incX] * y[(p+3)*incY]
	}
	for ; p < k; p++ {
		s0 += x[p*incX] * y[p*incY]
	}
	return (s0 + s1) + (s2 + s3)
}

// sgemmNaive is the straightforward triple loop, ordered so that the inner
// loop runs along contiguous memory for each transpose combination.
func sgemmNaive(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if transB {
		// Rows of op(B)ᵀ are contiguous: each c[i][j] is a dot product.
		incA, stepA := 1, lda
		if transA {
			incA, stepA = lda, 1
		}
		for i := range m {
			gemvRow(true, n, k, alpha, a[i*stepA:], incA, b, ldb, beta, c[i*ldc:i*ldc+n])
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
				s = a[p*lda+i]
			} else {
				s = a[i*lda+p]
			}
			Axpy(alpha*s, b[p*ldb:p*ldb+n], crow)
		}
	}
}
