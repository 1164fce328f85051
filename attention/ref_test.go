package attention

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// This file holds the float64 reference the tests measure every
// implementation against, written from the definitions (not from problem's
// geometry helpers), and the tolerance rule of checkTol.

// tcase is one attention configuration under test.
type tcase struct {
	B, H, KVH, Tq, Tk, D int
	Causal               bool
	Window               int
	Lengths              []int
	Scale                float32
	BQ, BK               int
}

func (c tcase) String() string {
	s := fmt.Sprintf("B%dH%dKV%dTq%dTk%dD%d", c.B, c.H, c.KVH, c.Tq, c.Tk, c.D)
	if c.Causal {
		s += "_causal"
	}
	if c.Window > 0 {
		s += fmt.Sprintf("_w%d", c.Window)
	}
	if c.Lengths != nil {
		s += fmt.Sprintf("_len%v", c.Lengths)
	}
	if c.BQ > 0 || c.BK > 0 {
		s += fmt.Sprintf("_tile%dx%d", c.BQ, c.BK)
	}
	return s
}

func (c tcase) opts() Options {
	return Options{Scale: c.Scale, Causal: c.Causal, Window: c.Window, Lengths: c.Lengths, BlockQ: c.BQ, BlockK: c.BK}
}

// refAllowed is the mask from its definition: query row i of sequence b sees
// key j.
func (c tcase) refAllowed(b, i, j int) bool {
	pos := i + c.Tk - c.Tq
	lk := c.Tk
	if c.Lengths != nil {
		pos, lk = i, c.Lengths[b]
		if i >= lk {
			return false
		}
	}
	if j >= lk {
		return false
	}
	if c.Causal && j > pos {
		return false
	}
	if c.Window > 0 {
		if j <= pos-c.Window {
			return false
		}
		if !c.Causal && j >= pos+c.Window {
			return false
		}
	}
	return true
}

func (c tcase) scale() float64 {
	if c.Scale != 0 {
		return float64(c.Scale)
	}
	return 1 / math.Sqrt(float64(c.D))
}

// inputs holds one problem's random data.
type inputs struct {
	q, k, v, dO Tensor
}

func randData(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func (c tcase) inputs(seed uint64) inputs {
	rng := rand.New(rand.NewPCG(seed, 7))
	mk := func(h, t int) Tensor {
		x, err := Contiguous(randData(rng, c.B*h*t*c.D), c.B, h, t, c.D)
		if err != nil {
			panic(err)
		}
		return x
	}
	return inputs{q: mk(c.H, c.Tq), k: mk(c.KVH, c.Tk), v: mk(c.KVH, c.Tk), dO: mk(c.H, c.Tq)}
}

// ref64 is the float64 reference result: output, log-sum-exp and gradients,
// each in contiguous [B, H, T, D] order.
type ref64 struct {
	o, lse, dq, dk, dv []float64
}

func (c tcase) reference(in inputs) ref64 {
	g := c.H / c.KVH
	sc := c.scale()
	r := ref64{
		o:   make([]float64, c.B*c.H*c.Tq*c.D),
		lse: make([]float64, c.B*c.H*c.Tq),
		dq:  make([]float64, c.B*c.H*c.Tq*c.D),
		dk:  make([]float64, c.B*c.KVH*c.Tk*c.D),
		dv:  make([]float64, c.B*c.KVH*c.Tk*c.D),
	}
	s := make([]float64, c.Tk)
	pr := make([]float64, c.Tk)
	for b := 0; b < c.B; b++ {
		for h := 0; h < c.H; h++ {
			kh := h / g
			for i := 0; i < c.Tq; i++ {
				qi := in.q.Row(b, h, i)
				m := math.Inf(-1)
				for j := 0; j < c.Tk; j++ {
					if !c.refAllowed(b, i, j) {
						s[j] = math.Inf(-1)
						continue
					}
					var d float64
					for x, kx := range in.k.Row(b, kh, j) {
						d += float64(qi[x]) * float64(kx)
					}
					s[j] = sc * d
					m = math.Max(m, s[j])
				}
				row := (b*c.H+h)*c.Tq + i
				if math.IsInf(m, -1) {
					r.lse[row] = math.Inf(-1)
					continue
				}
				var sum float64
				for j := range s {
					pr[j] = 0
					if !math.IsInf(s[j], -1) {
						pr[j] = math.Exp(s[j] - m)
						sum += pr[j]
					}
				}
				r.lse[row] = m + math.Log(sum)
				o := r.o[row*c.D : (row+1)*c.D]
				for j := range pr {
					pr[j] /= sum
					if pr[j] != 0 {
						for x, vx := range in.v.Row(b, kh, j) {
							o[x] += pr[j] * float64(vx)
						}
					}
				}
				// Backward for this row.
				dO := in.dO.Row(b, h, i)
				var di float64
				for x := range o {
					di += float64(dO[x]) * o[x]
				}
				dq := r.dq[row*c.D : (row+1)*c.D]
				for j := range pr {
					if pr[j] == 0 {
						continue
					}
					var dp float64
					vj := in.v.Row(b, kh, j)
					for x := range dO {
						dp += float64(dO[x]) * float64(vj[x])
					}
					ds := pr[j] * (dp - di)
					kr := ((b*c.KVH+kh)*c.Tk + j) * c.D
					kj := in.k.Row(b, kh, j)
					for x := 0; x < c.D; x++ {
						r.dv[kr+x] += pr[j] * float64(dO[x])
						dq[x] += sc * ds * float64(kj[x])
						r.dk[kr+x] += sc * ds * float64(qi[x])
					}
				}
			}
		}
	}
	return r
}

// maxErr returns max |got − want| over a [B, H, T, D] view in contiguous
// order, and fails on NaN.
func maxErr(t *testing.T, name string, got Tensor, want []float64) float64 {
	t.Helper()
	var e float64
	n := 0
	for b := 0; b < got.B; b++ {
		for h := 0; h < got.H; h++ {
			for i := 0; i < got.T; i++ {
				for x, g := range got.Row(b, h, i) {
					if g != g {
						t.Fatalf("%s: NaN at (%d %d %d %d)", name, b, h, i, x)
					}
					e = math.Max(e, math.Abs(float64(g)-want[n]))
					n++
				}
			}
		}
	}
	return e
}

func maxErrLSE(t *testing.T, got []float32, want []float64) float64 {
	t.Helper()
	var e float64
	for i, g := range got {
		w := want[i]
		switch {
		case g != g:
			t.Fatalf("lse: NaN at %d", i)
		case math.IsInf(w, -1) || math.IsInf(float64(g), -1):
			if !math.IsInf(w, -1) || !math.IsInf(float64(g), -1) {
				t.Fatalf("lse[%d] = %v, want %v", i, g, w)
			}
		default:
			e = math.Max(e, math.Abs(float64(g)-w))
		}
	}
	return e
}

// checkTol is the tolerance rule: an implementation's error against the
// float64 reference may be at most twice the float32 naive error plus 1e-6.
func checkTol(t *testing.T, what string, errImpl, errNaive float64) {
	t.Helper()
	if testing.Verbose() {
		t.Logf("%s: error %.3g, naive %.3g, ratio %.2f", what, errImpl, errNaive, errImpl/(2*errNaive+1e-6))
	}
	if errImpl > 2*errNaive+1e-6 {
		t.Errorf("%s: error %.3g vs float64, naive float32 %.3g: over 2×naive+1e-6", what, errImpl, errNaive)
	}
}
