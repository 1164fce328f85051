//go:build amd64 && !purego

package kernels

// accCenteredAVX2 is generated with the GELU kernels (_asm/gelu, see
// gelu_amd64.go). normAVX2 enables it (the "norm" family of the registry).
var normAVX2 bool

func init() { Register("norm", "avx2", LevelAVX2, true, &normAVX2) }

// accCenteredAsm computes AccCentered with the AVX2 kernel and reports
// whether it was enabled. Elements past the last whole vector go through
// the kernel from a padded copy, so every element takes the same
// instructions (the kernel's FMA rounds differently from the Go loop).
func accCenteredAsm(dst, a, x []float32, mu, rs float32) bool {
	if !normAVX2 {
		return false
	}
	const w = 8
	n := len(dst) &^ (w - 1)
	if n > 0 {
		_, _, _ = dst[n-1], a[n-1], x[n-1]
		accCenteredAVX2(n, &dst[0], &a[0], &x[0], mu, rs)
	}
	if r := len(dst) - n; r > 0 {
		var td, ta, tx [w]float32
		copy(td[:], dst[n:])
		copy(ta[:], a[n:])
		copy(tx[:], x[n:])
		accCenteredAVX2(w, &td[0], &ta[0], &tx[0], mu, rs)
		copy(dst[n:], td[:r])
	}
	return true
}
