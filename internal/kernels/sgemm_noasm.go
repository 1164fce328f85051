//go:build !amd64 || purego

package kernels

// sgemmKernel6x16AVX2 exists only in assembly builds; useAVX2 is constant
// false here, so this is never called.
func sgemmKernel6x16AVX2(kc int, a, b, c *float32, ldc int, alpha, beta float32) {
	panic("unreachable")
}
