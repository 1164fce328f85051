package model

import "math"

// RopeFreqs returns the rotary inverse frequencies of one head,
// inv_freq_i = theta^(−2i/headDim) for i < headDim/2, rescaled as Hugging
// Face's rope_scaling says: "linear" divides them by Factor (positions /
// Factor); "llama3" divides the low frequencies (wavelength above
// OriginalMaxPositions/LowFreqFactor) by Factor, keeps the high ones
// (wavelength below OriginalMaxPositions/HighFreqFactor), and interpolates
// between. Computed in float64; the config is assumed valid.
func RopeFreqs(headDim int, theta float64, s *RopeScaling) []float64 {
	half := headDim / 2
	inv := make([]float64, half)
	for i := range inv {
		inv[i] = 1 / math.Pow(theta, float64(2*i)/float64(headDim))
	}
	if s == nil {
		return inv
	}
	switch s.Type {
	case "linear":
		for i := range inv {
			inv[i] /= s.Factor
		}
	case "llama3":
		old := float64(s.OriginalMaxPositions)
		lowWavelen, highWavelen := old/s.LowFreqFactor, old/s.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen < highWavelen:
			case wavelen > lowWavelen:
				inv[i] = f / s.Factor
			default:
				smooth := (old/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				inv[i] = (1-smooth)*f/s.Factor + smooth*f
			}
		}
	}
	return inv
}

// ropeTable holds cos and sin of position·inv_freq for positions 0…n−1,
// [n, headDim/2] each.
type ropeTable struct {
	half     int
	cos, sin []float32
}

// newRopeTable computes the table of c's heads for n positions.
func newRopeTable(c Config, n int) *ropeTable {
	inv := RopeFreqs(c.HeadDim(), c.RopeTheta, c.RopeScaling)
	t := &ropeTable{half: len(inv), cos: make([]float32, n*len(inv)), sin: make([]float32, n*len(inv))}
	for p := 0; p < n; p++ {
		for i, f := range inv {
			a := float64(p) * f
			t.cos[p*t.half+i] = float32(math.Cos(a))
			t.sin[p*t.half+i] = float32(math.Sin(a))
		}
	}
	return t
}

// rotate applies Hugging Face's rotate-half RoPE in place to the first
// heads heads of x's rows of width w, for sequences of T rows whose first
// row sits at position pos0: in each head, x[i] and x[i+half] turn by the
// angle of (pos0 + row mod T, i). inverse turns by the opposite angle (the
// backward of rotate).
func (t *ropeTable) rotate(x []float32, w, heads, T, pos0 int, inverse bool) {
	half := t.half
	rows := len(x) / w
	for r := 0; r < rows; r++ {
		p := pos0 + r%T
		cs, sn := t.cos[p*half:(p+1)*half], t.sin[p*half:(p+1)*half]
		row := x[r*w : (r+1)*w]
		for h := 0; h < heads; h++ {
			a := row[h*2*half : h*2*half+half]
			b := row[h*2*half+half : (h+1)*2*half]
			for i := range a {
				c, s := cs[i], sn[i]
				if inverse {
					s = -s
				}
				x1, x2 := a[i], b[i]
				a[i] = x1*c - x2*s
				b[i] = x2*c + x1*s
			}
		}
	}
}
