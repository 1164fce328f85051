package kernels

// AccCentered adds a[i]·(x[i] − mu)·rs to dst[i]: for a row x of a
// LayerNorm input with mean mu and reciprocal standard deviation rs, and
// the output gradient a of that row, it accumulates the row's part of the γ
// gradient. dst, a and x must have the same length. An element's result
// does not depend on where the slices are cut, so callers may split them.
func AccCentered(dst, a, x []float32, mu, rs float32) {
	checkSameLen("AccCentered", len(a), len(dst))
	checkSameLen("AccCentered", len(x), len(dst))
	if !accCenteredAsm(dst, a, x, mu, rs) {
		accCenteredGeneric(dst, a, x, mu, rs)
	}
}

func accCenteredGeneric(dst, a, x []float32, mu, rs float32) {
	a = a[:len(dst)]
	x = x[:len(dst)]
	for i := range dst {
		dst[i] += a[i] * (x[i] - mu) * rs
	}
}
