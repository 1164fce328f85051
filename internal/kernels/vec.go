package kernels

// The vector routines below are the inner loops of softmax, LayerNorm,
// attention tiles and optimizers. Each checks its lengths and dispatches to
// the assembly or the portable implementation.

func checkSameLen(name string, a, b int) {
	if a != b {
		panic("kernels: " + name + ": slices of different lengths")
	}
}

// Dot returns Σ x[i]·y[i]. x and y must have the same length.
func Dot(x, y []float32) float32 {
	checkSameLen("Dot", len(x), len(y))
	return dotGeneric(x, y)
}

// Axpy computes y[i] += alpha·x[i]. x and y must have the same length.
func Axpy(alpha float32, x, y []float32) {
	checkSameLen("Axpy", len(x), len(y))
	axpyGeneric(alpha, x, y)
}

// Scale computes x[i] *= alpha.
func Scale(alpha float32, x []float32) {
	scaleGeneric(alpha, x)
}

// Max returns the largest element of x, or -Inf for an empty slice.
// NaN elements are ignored unless every element is NaN.
func Max(x []float32) float32 {
	return maxGeneric(x)
}

// Sum returns Σ x[i].
func Sum(x []float32) float32 {
	return sumGeneric(x)
}

// Exp computes dst[i] = exp(src[i]) to within a few ulp over the float32
// range: exp(-Inf) = 0, large negative inputs flush to 0, large positive ones
// give +Inf, and NaN stays NaN. dst and src must have the same length and may
// be the same slice.
func Exp(dst, src []float32) {
	checkSameLen("Exp", len(dst), len(src))
	expGeneric(dst, src)
}

// ExpSubSum computes dst[i] = exp(src[i] - m) and returns Σ dst[i]: the
// numerator and denominator of a softmax whose running maximum is m. With
// m = -Inf and src[i] = -Inf the element is 0 (a fully masked row), not NaN.
func ExpSubSum(dst, src []float32, m float32) float32 {
	checkSameLen("ExpSubSum", len(dst), len(src))
	return expSubSumGeneric(dst, src, m)
}
