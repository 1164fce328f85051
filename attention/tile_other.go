//go:build !amd64 || purego

package attention

// Without assembly every tile product runs in Go.

func rowDotAsm(x, y []float32, kc int) (float32, bool) { return 0, false }

func rowDot8Asm(x []float32, sx int, y []float32, sy, n, kc int, out *[8]float32) bool {
	return false
}

func gemmAsm(m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) int {
	return 0
}

func gemmWideAsm(kc, m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) (m6, n32 int) {
	return 0, 0
}

func scaleRowsAsm(dst []float32, ldd int, src []float32, lds, rows, d int, s []float32, ss int) int {
	return 0
}

func transposeAsm(dst []float32, ldd int, src []float32, lds, n, d int, s float32) (n8, d8 int) {
	return 0, 0
}
