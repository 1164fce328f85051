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

// SplitMix64 is the finalizer of the splitmix64 generator: a bijective
// hash of z whose outputs for consecutive z are statistically independent,
// the counter-based random source of the dropout masks.
func SplitMix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// DropoutWords draws dropout mask words from a counter: bit 4q+f of dst[w]
// (element 64w+4q+f) is set, the element kept, when the 16-bit field f
// (bits 16f to 16f+15) of SplitMix64(ctr+16w+q) is at least thr, for
// q < 16 and f < 4. An element is then dropped with probability
// thr/2¹⁶; thr ≥ 2¹⁶ drops all.
func DropoutWords(dst []uint64, ctr uint64, thr uint32) {
	if thr > 0xffff {
		clear(dst)
		return
	}
	dropoutWords(dst, ctr, thr)
}

// dropoutWordsGeneric is DropoutWords in Go, a hash at a time.
func dropoutWordsGeneric(dst []uint64, ctr uint64, thr uint32) {
	t := uint64(thr)
	// kept is 1 when the 16 bits v are ≥ t: the subtraction wraps (top
	// bit set) exactly when they are below.
	kept := func(v uint64) uint64 { return 1 ^ (v&0xffff-t)>>63 }
	for w := range dst {
		var word uint64
		for q := range uint64(16) {
			h := SplitMix64(ctr + uint64(w)*16 + q)
			word |= (kept(h) | kept(h>>16)<<1 | kept(h>>32)<<2 | kept(h>>48)<<3) << (4 * q)
		}
		dst[w] = word
	}
}
