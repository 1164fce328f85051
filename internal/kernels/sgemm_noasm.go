//go:build !amd64 || purego

package kernels

// The assembly routines exist only in assembly builds; useAVX2 is constant
// false here, so these are never called.

func sgemmKernel6x16AVX2(kc int, a, b, c *float32, ldc int, alpha, beta float32) {
	panic("unreachable")
}

func sgemmPackA6AVX2(k8 int, src *float32, lda int, dst *float32) { panic("unreachable") }

func sgemmPackBT16AVX2(k8 int, src *float32, ldb int, dst *float32) { panic("unreachable") }

func sgemmPackBNAVX2(rows, panels int, src *float32, ld int, dst *float32, stride int) {
	panic("unreachable")
}

func sgemmPackATAVX2(rows, panels int, src *float32, ld int, dst *float32, stride int) {
	panic("unreachable")
}
