package kernels

//go:generate go run -C _asm ./vec -out ../vec_amd64.s -stubs ../vec_amd64_stubs.go

// The vector routines below are the inner loops of softmax, LayerNorm,
// attention tiles and optimizers. Each checks its lengths and calls the
// family's dispatcher (vec_amd64.go, vec_other.go), which picks the assembly
// or the portable implementation.

func checkSameLen(name string, a, b int) {
	if a != b {
		panic("kernels: " + name + ": slices of different lengths")
	}
}

// Dot returns Σ x[i]·y[i]. x and y must have the same length. The summation
// order depends on the implementation: results agree to within
// len(x)·eps·Σ|x[i]·y[i]| (eps = 2^-23), and so does Sum.
func Dot(x, y []float32) float32 {
	checkSameLen("Dot", len(x), len(y))
	return dot(x, y)
}

// DotI8 returns Σ x[i]·w[i] with w read as integers, the inner loop of a
// product with int8 weights kept int8 (dequantized by the caller's scale
// after the sum). x and w must have the same length.
func DotI8(x []float32, w []int8) float32 {
	checkSameLen("DotI8", len(x), len(w))
	return dotI8(x, w)
}

// DequantI8 writes dst[i] = src[i]·s: an int8 row back to float32 with its
// scale. dst and src must have the same length.
func DequantI8(dst []float32, src []int8, s float32) {
	checkSameLen("DequantI8", len(dst), len(src))
	dequantI8(dst, src, s)
}

// AddRows adds rows rows of m, ld floats apart, into s: s[j] += m[r·ld+j]
// for j < len(s), the rows in order (r = 0, 1, …), so each sum has the bits
// of a loop of Axpy(1, row, s) over the rows (a bias gradient's column
// sums). m must hold (rows−1)·ld + len(s) floats, and ld ≥ len(s).
func AddRows(s, m []float32, rows, ld int) {
	if rows <= 0 || len(s) == 0 {
		return
	}
	if ld < len(s) || len(m) < (rows-1)*ld+len(s) {
		panic("kernels: AddRows: m too short for its rows")
	}
	addRows(s, m, rows, ld)
}

// addRowsGeneric is AddRows by a row-by-row axpy.
func addRowsGeneric(s, m []float32, rows, ld int) {
	if len(s) == 0 {
		return
	}
	for r := range rows {
		axpy(1, m[r*ld:r*ld+len(s)], s)
	}
}

// Axpy computes y[i] += alpha·x[i]. x and y must have the same length.
func Axpy(alpha float32, x, y []float32) {
	checkSameLen("Axpy", len(x), len(y))
	axpy(alpha, x, y)
}

// Scale computes x[i] *= alpha.
func Scale(alpha float32, x []float32) {
	scale(alpha, x)
}

// Max returns the largest element of x, or -Inf for an empty slice.
// NaN elements are ignored unless every element is NaN. When the maximum is
// zero its sign is unspecified.
func Max(x []float32) float32 {
	return maxVec(x)
}

// Sum returns Σ x[i].
func Sum(x []float32) float32 {
	return sum(x)
}

// Exp computes dst[i] = exp(src[i]) to within 1 ulp of the correctly rounded
// result over the whole float32 range. Subnormal results (src below -87.3)
// are rounded, not flushed to zero; below about -103.97 the result is 0, and
// exp(-Inf) = 0. Above ln(MaxFloat32) ≈ 88.72 it is +Inf, ±0 give exactly 1,
// and NaN stays NaN. The assembly and Go implementations may differ by 1 ulp
// (fused multiply-adds). dst and src must have the same length and may be
// the same slice.
func Exp(dst, src []float32) {
	checkSameLen("Exp", len(dst), len(src))
	exp(dst, src)
}

// ExpSubSum computes dst[i] = exp(src[i] - m) and returns Σ dst[i]: the
// numerator and denominator of a softmax whose running maximum is m, in one
// pass. Each element is Exp of the float32 difference src[i] - m, with Exp's
// accuracy. With m = -Inf and src[i] = -Inf the element is 0 (a fully masked
// row), not NaN. dst and src must have the same length and may be the same
// slice.
func ExpSubSum(dst, src []float32, m float32) float32 {
	checkSameLen("ExpSubSum", len(dst), len(src))
	return expSubSum(dst, src, m)
}
