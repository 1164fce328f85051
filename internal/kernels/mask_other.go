//go:build !amd64 || purego

package kernels

func maskScale(dst, src []float32, mask []uint64, lo int, k float32) {
	maskScaleGeneric(dst, src, mask, lo, k)
}
