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
	m := float32(math.Inf(-1))
	nan := len(x) > 0
	for _, v := range x {
		if v > m {
			m = v
		}
		if v == v {
			nan = false
		}
	}
	if nan {
		return float32(math.NaN())
	}
	return m
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

// Constants of the float32 exp: x = k·ln2 + r with |r| ≤ ln2/2, ln2 split in
// a high part exact in float32 and a low correction (Cody–Waite), then a
// degree-6 polynomial for e^r and 2^k built in the exponent bits.
const (
	expLn2Hi   = 0.693359375
	expLn2Lo   = -2.12194440e-4
	expLog2e   = 1.44269504088896341
	expOverMax = 88.72283905206835 // ln(MaxFloat32)
	expUnder   = -103.97208        // below this e^x rounds to 0 in float32
)

func expScalar(x float32) float32 {
	switch {
	case x != x:
		return x
	case x > expOverMax:
		return float32(math.Inf(1))
	case x < expUnder:
		return 0
	}
	k := float32(math.Floor(float64(x*expLog2e + 0.5)))
	r := x - k*expLn2Hi
	r -= k * expLn2Lo
	// e^r on [-ln2/2, ln2/2], Taylor–minimax coefficients.
	p := float32(1.0 / 720)
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	// 2^k, split so subnormal results stay exact: k may reach -150.
	ki := int32(k)
	if ki < -126 {
		p *= math.Float32frombits(uint32(ki+126+127) << 23)
		return p * math.Float32frombits(1<<23) // 2^-126
	}
	if ki > 127 {
		p *= 2
		ki--
	}
	return p * math.Float32frombits(uint32(ki+127)<<23)
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
