//go:build amd64 && !purego

package kernels

import "unsafe"

// MaskScale's AVX-512 kernel is generated with avo; its declaration is in
// mask_amd64_stubs.go and its code in mask_amd64.s. To change it, edit
// _asm/mask/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./mask -out ../mask_amd64.s -stubs ../mask_amd64_stubs.go -pkg kernels"

// maskAVX512 enables the ZMM kernels of MaskScale and DropoutWords (the
// "mask" family of the registry, impl.go). They need AVX-512's opmask
// registers (and DropoutWords AVX-512 DQ's 64-bit multiply), so there is no
// AVX2 form: below AVX-512 the Go loops run.
var maskAVX512 bool

func init() { Register("mask", "avx512", LevelAVX512, true, &maskAVX512) }

func maskScale(dst, src []float32, mask []uint64, lo int, k float32) {
	if !maskAVX512 {
		maskScaleGeneric(dst, src, mask, lo, k)
		return
	}
	// Go up to the first element whose bit starts a 16-bit mask word, the
	// kernel over whole words, Go for the rest: both give k·src or +0.
	h := min((16-lo%16)%16, len(dst))
	maskScaleGeneric(dst[:h], src[:h], mask, lo, k)
	n := (len(dst) - h) &^ 15
	if n > 0 {
		// On little-endian amd64, bit j of a uint64 word is bit j%16 of
		// its (j/16)th uint16.
		words := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(mask))), 4*len(mask))
		_, _, _ = dst[h+n-1], src[h+n-1], words[(lo+h+n-1)/16]
		maskScaleAVX512(n, &dst[h], &src[h], &words[(lo+h)/16], k)
	}
	maskScaleGeneric(dst[h+n:], src[h+n:], mask, lo+h+n, k)
}

func dropoutWords(dst []uint64, ctr uint64, thr uint32) {
	if !maskAVX512 || len(dst) == 0 {
		dropoutWordsGeneric(dst, ctr, thr)
		return
	}
	dropoutWordsAVX512(&dst[0], len(dst), ctr, uint64(thr))
}
