//go:build !amd64 || purego

package kernels

func maskScale(dst, src []float32, mask []uint64, lo int, k float32) {
	maskScaleGeneric(dst, src, mask, lo, k)
}

func dropoutWords(dst []uint64, ctr uint64, thr uint32) { dropoutWordsGeneric(dst, ctr, thr) }
