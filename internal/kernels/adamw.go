package kernels

import "math"

// AdamWParams are the constants of one AdamW step over a range of
// parameters (torch.optim.AdamW's arithmetic, in float32):
//
//	g' = g·GradScale                        (gradient clipping; 1: none)
//	m  = Beta1·m + OneMinusBeta1·g'
//	v  = Beta2·v + OneMinusBeta2·g'·g'
//	p  = p·Decay − StepSize·m / (√v·InvBC2Sqrt + Eps)
//
// with StepSize = lr/(1−β1ᵗ), InvBC2Sqrt = 1/√(1−β2ᵗ) and Decay = 1 −
// lr·weight_decay (1 for parameters without decay). The field order is
// the assembly's (adamwAVX2 reads them as nine consecutive floats).
type AdamWParams struct {
	GradScale, Decay          float32
	Beta1, OneMinusBeta1      float32
	Beta2, OneMinusBeta2      float32
	StepSize, InvBC2Sqrt, Eps float32
}

// AdamW applies one AdamW step to the parameters p and the moments m and v
// from the gradients g (left unchanged), in one pass over the four
// slices. Every product and sum is rounded to float32 separately (no fused
// multiply-adds) and the square root is correctly rounded, so every
// implementation gives the same bits, equal to the plain Go loop's. The
// slices must have the same length.
func AdamW(p, g, m, v []float32, k *AdamWParams) {
	checkSameLen("AdamW", len(p), len(g))
	checkSameLen("AdamW", len(p), len(m))
	checkSameLen("AdamW", len(p), len(v))
	adamw(p, g, m, v, k)
}

// adamwGeneric is the portable AdamW loop. The explicit conversions keep
// the compiler from fusing products into sums (GOAMD64=v3 would), so the
// result is the same on every target; float32(√float64(x)) is the correctly
// rounded float32 square root, as VSQRTPS computes it.
func adamwGeneric(p, g, m, v []float32, k *AdamWParams) {
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	for i := range p {
		gi := float32(g[i] * k.GradScale)
		pi := float32(p[i] * k.Decay)
		mi := float32(k.Beta1*m[i]) + float32(k.OneMinusBeta1*gi)
		vi := float32(k.Beta2*v[i]) + float32(float32(k.OneMinusBeta2*gi)*gi)
		m[i], v[i] = mi, vi
		denom := float32(float32(math.Sqrt(float64(vi)))*k.InvBC2Sqrt) + k.Eps
		p[i] = pi - float32(float32(k.StepSize*mi)/denom)
	}
}
