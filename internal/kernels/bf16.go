package kernels

import "math"

// bfloat16 ("brain float") is the upper half of a float32: the same sign
// and 8-bit exponent, and 7 of the 23 mantissa bits. Widening is exact (a
// shift); narrowing rounds to nearest, ties to even, as torch and the
// AVX512_BF16 instructions do, except that subnormals are kept rather than
// flushed to zero. Slices of bf16 values are []uint16 throughout galleon,
// the layout of BF16 tensors in safetensors files.

// Float32ToBF16 rounds f to the nearest bfloat16, ties to even. Values
// beyond the largest finite bfloat16 (after rounding) become ±Inf; NaNs stay
// NaN, with their sign and top payload bits, and are made quiet (a payload
// only in the low 16 bits would otherwise vanish into Inf).
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// BF16ToFloat32 widens a bfloat16 to float32 exactly.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// RoundBF16 returns f rounded to bfloat16 precision, as a float32.
func RoundBF16(f float32) float32 { return BF16ToFloat32(Float32ToBF16(f)) }

// ToBF16 rounds src to bfloat16 into dst (Float32ToBF16 element by
// element). It panics if dst is shorter than src.
func ToBF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	n := toBF16Asm(dst, src)
	for i := n; i < len(src); i++ {
		dst[i] = Float32ToBF16(src[i])
	}
}

// FromBF16 widens src into dst. It panics if dst is shorter than src.
func FromBF16(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	n := fromBF16Asm(dst, src)
	for i := n; i < len(src); i++ {
		dst[i] = BF16ToFloat32(src[i])
	}
}

// RoundBF16Slice rounds each element of src to bfloat16 precision into dst
// (dst may be src), through a stack buffer so that the vector routines do
// the work. It panics if dst is shorter than src.
func RoundBF16Slice(dst, src []float32) {
	var buf [256]uint16
	for len(src) > 0 {
		n := min(len(src), len(buf))
		ToBF16(buf[:n], src[:n])
		FromBF16(dst[:n], buf[:n])
		dst, src = dst[n:], src[n:]
	}
}
