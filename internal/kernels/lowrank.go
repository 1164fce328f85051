package kernels

// Low-rank products: a rank-r (r ≤ 8) factor times a large activation X,
// as a LoRA adapter computes them. Sgemm packs all of X for them (a full
// copy of a matrix it then reads once for eight rows or columns) and tiles
// the rank 12 or 32 wide; these read X where it lies, split over threads by
// rows or columns, and take an inverted-dropout bit mask as they load or
// store X's elements, so a masked X is never written out. On amd64 with
// AVX-512 the inner loops are assembly (lowrank_amd64.s); elsewhere, and for
// shapes off the kernels' 16-element steps, they are the Go loops of this
// file.
//
// A mask is read as MaskScale reads it: element (i, p) of X, stored at
// X[i·ldx+p], is kept when bit lo+i·ldx+p of mask is set (bit b being
// mask[b/64]>>(b%64)&1), and a nil mask keeps every element.

// LowRankMax is the largest rank of the low-rank products.
const LowRankMax = 8

// lowRankGrain is the number of elements of X per item of a product's
// loop: about 0.1 ms of work.
const lowRankGrain = 1 << 15

// LowRankDot sets c[j·ldc+i] = alpha·Σ_p A[j][p]·X[i][p] over the kept
// elements of X, for j < r and i < rows, p < k: C = alpha·A·(X∘M)ᵀ, r×rows,
// with A r×k (stride lda) and X rows×k (stride ldx).
func LowRankDot(r, rows, k int, alpha float32, a []float32, lda int, x []float32, ldx int, mask []uint64, lo int, c []float32, ldc int) {
	checkLowRank("LowRankDot", r, rows, k)
	if rows == 0 || r == 0 {
		return
	}
	checkMat("LowRankDot", "a", a, r, k, lda)
	checkMat("LowRankDot", "x", x, rows, k, ldx)
	checkMat("LowRankDot", "c", c, r, rows, ldc)
	checkMask("LowRankDot", mask, lo, rows, k, ldx)
	if !lowRankDotAsm(r, rows, k, alpha, a, lda, x, ldx, mask, lo, c, ldc) {
		lowRankDotGeneric(r, rows, k, alpha, a, lda, x, ldx, mask, lo, c, ldc)
	}
}

// LowRankOuter sets c[j·ldc+q] = alpha·Σ_i H[j][i]·X[i][q] over the kept
// elements of X, for j < r and q < n, i < rows: C = alpha·H·(X∘M), r×n, with
// H r×rows (stride ldh) and X rows×n (stride ldx).
func LowRankOuter(r, rows, n int, alpha float32, h []float32, ldh int, x []float32, ldx int, mask []uint64, lo int, c []float32, ldc int) {
	checkLowRank("LowRankOuter", r, rows, n)
	if n == 0 || r == 0 {
		return
	}
	checkMat("LowRankOuter", "h", h, r, rows, ldh)
	checkMat("LowRankOuter", "x", x, rows, n, ldx)
	checkMat("LowRankOuter", "c", c, r, n, ldc)
	checkMask("LowRankOuter", mask, lo, rows, n, ldx)
	if !lowRankOuterAsm(r, rows, n, alpha, h, ldh, x, ldx, mask, lo, c, ldc) {
		lowRankOuterGeneric(r, rows, n, alpha, h, ldh, x, ldx, mask, lo, c, ldc)
	}
}

// LowRankExpand sets c[i·ldc+q] = alpha·Σ_j H[j][i]·A[j][q] for i < rows
// and q < n, j < r: C = alpha·Hᵀ·A, rows×n, with H r×rows (stride ldh) and A
// r×n (stride lda). With acc the product is added onto c instead. A mask
// applies to C: where the bit of c's element (i, q), lo+i·ldc+q, is clear,
// the element is +0, or with acc has +0 added.
func LowRankExpand(r, rows, n int, alpha float32, h []float32, ldh int, a []float32, lda int, acc bool, c []float32, ldc int, mask []uint64, lo int) {
	checkLowRank("LowRankExpand", r, rows, n)
	if rows == 0 || n == 0 {
		return
	}
	checkMat("LowRankExpand", "h", h, r, rows, ldh)
	checkMat("LowRankExpand", "a", a, r, n, lda)
	checkMat("LowRankExpand", "c", c, rows, n, ldc)
	checkMask("LowRankExpand", mask, lo, rows, n, ldc)
	if !lowRankExpandAsm(r, rows, n, alpha, h, ldh, a, lda, acc, c, ldc, mask, lo) {
		lowRankExpandGeneric(r, rows, n, alpha, h, ldh, a, lda, acc, c, ldc, mask, lo)
	}
}

func checkLowRank(fn string, r, m, n int) {
	if r < 0 || r > LowRankMax || m < 0 || n < 0 {
		panic("kernels: " + fn + ": bad rank or size")
	}
}

// checkMat panics unless s holds an r×c matrix of stride ld.
func checkMat(fn, name string, s []float32, r, c, ld int) {
	if ld < max(1, c) {
		panic("kernels: " + fn + ": bad leading dimension of " + name)
	}
	if r > 0 && c > 0 && len(s) < (r-1)*ld+c {
		panic("kernels: " + fn + ": insufficient length of " + name)
	}
}

// checkMask panics unless mask (when not nil) holds the bits of a rows×n
// matrix of stride ld from bit lo.
func checkMask(fn string, mask []uint64, lo, rows, n, ld int) {
	if mask == nil || rows == 0 || n == 0 {
		return
	}
	if lo < 0 || (lo+(rows-1)*ld+n+63)/64 > len(mask) {
		panic("kernels: " + fn + ": mask too short")
	}
}

// kept reports whether bit b of mask is set; a nil mask keeps all.
func kept(mask []uint64, b int) bool {
	return mask == nil || mask[b>>6]>>(uint(b)&63)&1 == 1
}

func lowRankDotGeneric(r, rows, k int, alpha float32, a []float32, lda int, x []float32, ldx int, mask []uint64, lo int, c []float32, ldc int) {
	for i := range rows {
		xr := x[i*ldx : i*ldx+k]
		for j := range r {
			ar := a[j*lda : j*lda+k]
			var s float32
			for p, v := range xr {
				if kept(mask, lo+i*ldx+p) {
					s += ar[p] * v
				}
			}
			c[j*ldc+i] = alpha * s
		}
	}
}

func lowRankOuterGeneric(r, rows, n int, alpha float32, h []float32, ldh int, x []float32, ldx int, mask []uint64, lo int, c []float32, ldc int) {
	for j := range r {
		cr := c[j*ldc : j*ldc+n]
		clear(cr)
		for i := range rows {
			hv := h[j*ldh+i]
			for q, v := range x[i*ldx : i*ldx+n] {
				if kept(mask, lo+i*ldx+q) {
					cr[q] += hv * v
				}
			}
		}
		for q := range cr {
			cr[q] *= alpha
		}
	}
}

func lowRankExpandGeneric(r, rows, n int, alpha float32, h []float32, ldh int, a []float32, lda int, acc bool, c []float32, ldc int, mask []uint64, lo int) {
	for i := range rows {
		cr := c[i*ldc : i*ldc+n]
		for q := range cr {
			var s float32
			for j := range r {
				s += h[j*ldh+i] * a[j*lda+q]
			}
			switch {
			case !kept(mask, lo+i*ldc+q):
				if acc {
					cr[q] += 0
				} else {
					cr[q] = 0
				}
			case acc:
				cr[q] += alpha * s
			default:
				cr[q] = alpha * s
			}
		}
	}
}
