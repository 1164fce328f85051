package kernels

// SumSquares64 returns Σ x[i]², each square computed exactly in float64 and
// summed in eight interleaved float64 chains (element i goes to chain
// i mod 8) that are combined as ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)). The
// order is fixed, so every CPU gives the same bits; eight chains let the
// additions overlap where one chain waits on each addition's latency
// (BenchmarkSumSquares64, blocks of 1024 as gradient clipping's norm sums
// them: 7–9× one chain's rate). It is that norm's block sum.
func SumSquares64(x []float32) float64 {
	var s0, s1, s2, s3, s4, s5, s6, s7 float64
	i := 0
	for ; i+8 <= len(x); i += 8 {
		v := x[i : i+8 : i+8]
		s0 += float64(v[0]) * float64(v[0])
		s1 += float64(v[1]) * float64(v[1])
		s2 += float64(v[2]) * float64(v[2])
		s3 += float64(v[3]) * float64(v[3])
		s4 += float64(v[4]) * float64(v[4])
		s5 += float64(v[5]) * float64(v[5])
		s6 += float64(v[6]) * float64(v[6])
		s7 += float64(v[7]) * float64(v[7])
	}
	// The tail continues the chains of its positions.
	var t [8]float64
	for j := 0; i+j < len(x); j++ {
		t[j] = float64(x[i+j]) * float64(x[i+j])
	}
	s0, s1, s2, s3 = s0+t[0], s1+t[1], s2+t[2], s3+t[3]
	s4, s5, s6, s7 = s4+t[4], s5+t[5], s6+t[6], s7+t[7]
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}
