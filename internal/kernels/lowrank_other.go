//go:build !amd64 || purego

package kernels

// LowRankAccelerated reports whether the low-rank products run assembly
// kernels for rows of ld elements and masks from bit lo: never in this
// build, where they are the Go loops.
func LowRankAccelerated(ld, lo int) bool { return false }

func lowRankDotAsm(r, rows, k int, alpha float32, a []float32, lda int, x []float32, ldx int, mask []uint64, lo int, c []float32, ldc int) bool {
	return false
}

func lowRankOuterAsm(r, rows, n int, alpha float32, h []float32, ldh int, x []float32, ldx int, mask []uint64, lo int, c []float32, ldc int) bool {
	return false
}

func lowRankExpandAsm(r, rows, n int, alpha float32, h []float32, ldh int, a []float32, lda int, acc bool, c []float32, ldc int, mask []uint64, lo int) bool {
	return false
}
