package kernels

import "math"

// MaskScale sets dst[i] = k·src[i] where bit lo+i of mask is set and
// dst[i] = +0 where it is clear, bit j being mask[j/64]>>(j%64)&1: inverted
// dropout with a bit mask (a dropped element is +0 whatever src holds).
// dst and src must have the same length and may be the same slice; mask
// must hold bit lo+len(dst)−1.
func MaskScale(dst, src []float32, mask []uint64, lo int, k float32) {
	checkSameLen("MaskScale", len(dst), len(src))
	if lo < 0 || len(dst) > 0 && (lo+len(dst)+63)/64 > len(mask) {
		panic("kernels: MaskScale: mask too short")
	}
	maskScale(dst, src, mask, lo, k)
}

// maskScaleGeneric is MaskScale in Go, a mask word at a time.
func maskScaleGeneric(dst, src []float32, mask []uint64, lo int, k float32) {
	src = src[:len(dst)]
	for i := 0; i < len(dst); {
		e := lo + i
		w := mask[e>>6] >> (uint(e) & 63)
		n := min(64-e&63, len(dst)-i)
		d, s := dst[i:i+n], src[i:i+n]
		for j := range d {
			// All ones for a set bit, zero for a clear one.
			keep := -uint32(w & 1)
			d[j] = math.Float32frombits(math.Float32bits(s[j]*k) & keep)
			w >>= 1
		}
		i += n
	}
}
