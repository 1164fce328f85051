package kernels

import "math"

func dotGeneric(x, y []float32) float32 {
	var s0, s1, s2, s3 float32
	n := len(x) &^ 3
	for i := 0; i < n; i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for i := n; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dotI8Generic(x []float32, w []int8) float32 {
	w = w[:len(x)]
	var s0, s1, s2, s3 float32
	n := len(x) &^ 3
	for i := 0; i < n; i += 4 {
		s0 += x[i] * float32(w[i])
		s1 += x[i+1] * float32(w[i+1])
		s2 += x[i+2] * float32(w[i+2])
		s3 += x[i+3] * float32(w[i+3])
	}
	for i := n; i < len(x); i++ {
		s0 += x[i] * float32(w[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// i8ToF32 maps an int8, read as a byte, to its float32 value: a table lookup
// is faster than the conversion instruction Go emits.
var i8ToF32 = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(int8(uint8(i)))
	}
	return t
}()

func dequantI8Generic(dst []float32, src []int8, s float32) {
	t := &i8ToF32
	dst = dst[:len(src)]
	i := 0
	for ; i+8 <= len(src); i += 8 {
		d := dst[i : i+8 : i+8]
		x := src[i : i+8 : i+8]
		d[0] = t[uint8(x[0])] * s
		d[1] = t[uint8(x[1])] * s
		d[2] = t[uint8(x[2])] * s
		d[3] = t[uint8(x[3])] * s
		d[4] = t[uint8(x[4])] * s
		d[5] = t[uint8(x[5])] * s
		d[6] = t[uint8(x[6])] * s
		d[7] = t[uint8(x[7])] * s
	}
	for ; i < len(src); i++ {
		dst[i] = t[uint8(src[i])] * s
	}
}

func axpyGeneric(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}

func scaleGeneric(alpha float32, x []float32) {
	for i := range x {
		x[i] *= alpha
	}
}

func maxGeneric(x []float32) float32 {
	// Four running maxima break the compare chain; NaN fails every
	// comparison and so is skipped.
	m0, m1, m2, m3 := float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1))
	n := len(x) &^ 3
	for i := 0; i < n; i += 4 {
		if v := x[i]; v > m0 {
			m0 = v
		}
		if v := x[i+1]; v > m1 {
			m1 = v
		}
		if v := x[i+2]; v > m2 {
			m2 = v
		}
		if v := x[i+3]; v > m3 {
			m3 = v
		}
	}
	for _, v := range x[n:] {
		if v > m0 {
			m0 = v
		}
	}
	return maxOrNaN(x, max(m0, m1, m2, m3))
}

// maxOrNaN returns m, the largest non-NaN element of x or -Inf, except that
// it is NaN when every element of x is NaN.
func maxOrNaN(x []float32, m float32) float32 {
	if m != float32(math.Inf(-1)) {
		return m
	}
	// A masked row (all -Inf) stops at its first element.
	for _, v := range x {
		if v == v {
			return m
		}
	}
	if len(x) == 0 {
		return m
	}
	return float32(math.NaN())
}

func sumGeneric(x []float32) float32 {
	var s0, s1, s2, s3 float32
	n := len(x) &^ 3
	for i := 0; i < n; i += 4 {
		s0 += x[i]
		s1 += x[i+1]
		s2 += x[i+2]
		s3 += x[i+3]
	}
	for i := n; i < len(x); i++ {
		s0 += x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// Constants of the float32 exp, the same in the assembly (_asm/vec). x is
// clamped to [expLo, expHi], split as x = k·ln2 + r with k = round(x·log2e)
// and |r| ≤ ln2/2 (ln2 in a high part exact in float32 times any such k, and
// a low correction: Cody–Waite), e^r comes from a polynomial and 2^k is
// added into its exponent bits.
const (
	expLn2Hi = 0.693359375
	expLn2Lo = -2.12194440e-4
	expLog2e = 1.44269504088896341
	// Beyond the clamps e^x rounds to 0 (below e^-103.97 = 2^-150) or
	// overflows (above ln(MaxFloat32) ≈ 88.72) by itself, so they need no
	// special case; within them k ∈ [-150, 128].
	expLo = -104
	expHi = 89
	// Minimax fit of (e^r − 1 − r)/r² on [−ln2/2, ln2/2] (relative error of
	// e^r 4e-9, well under float32's rounding).
	expC6 = 1.3814191e-3
	expC5 = 8.368914e-3
	expC4 = 4.1668408e-2
	expC3 = 1.666652e-1
	expC2 = 4.9999994e-1
	// Adding then subtracting 1.5·2^23 rounds a float32 of magnitude below
	// 2^22 to an integer, ties to even, like VROUNDPS.
	expRound = 1.5 * (1 << 23)
)

// expScalar is the scalar form of the vector exp; both give the same results
// up to FMA contraction (at most an ulp apart). Subnormal results are not
// flushed: 2^k is applied in two steps so that they round once from e^r.
func expScalar(x float32) float32 {
	if x != x {
		return x
	}
	if x < expLo {
		x = expLo
	} else if x > expHi {
		x = expHi
	}
	k := x*expLog2e + expRound
	k -= expRound
	r := x - k*expLn2Hi
	r -= k * expLn2Lo
	p := float32(expC6)
	p = p*r + expC5
	p = p*r + expC4
	p = p*r + expC3
	p = p*r + expC2
	p = p*r + 1
	p = p*r + 1
	// p·2^k as (p·2^(k−h))·2^h with h = k>>1: the first factor is exact
	// (normal), the second rounds once, into the subnormals or to +Inf.
	ki := int32(k)
	h := ki >> 1
	p = math.Float32frombits(math.Float32bits(p) + uint32(ki-h)<<23)
	return p * math.Float32frombits(uint32(h+127)<<23)
}

func expGeneric(dst, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = expScalar(v)
	}
}

func expSubSumGeneric(dst, src []float32, m float32) float32 {
	dst = dst[:len(src)]
	var s float32
	for i, v := range src {
		e := float32(0)
		if v != float32(math.Inf(-1)) {
			e = expScalar(v - m)
		}
		dst[i] = e
		s += e
	}
	return s
}
