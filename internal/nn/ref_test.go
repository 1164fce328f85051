package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// float64 references: the textbook formulas, written for clarity, against
// which the float32 kernels and the ops' gradients (by finite differences)
// are checked.

func refEmbedding(wte, wpe []float64, ids []int32, T, C int) []float64 {
	out := make([]float64, len(ids)*C)
	for r, id := range ids {
		t := r % T
		for j := 0; j < C; j++ {
			out[r*C+j] = wte[int(id)*C+j] + wpe[t*C+j]
		}
	}
	return out
}

func refLayerNorm(x, g, b []float64, C int, eps float64) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/C; r++ {
		row := x[r*C : r*C+C]
		var mu float64
		for _, v := range row {
			mu += v
		}
		mu /= float64(C)
		var v2 float64
		for _, v := range row {
			v2 += (v - mu) * (v - mu)
		}
		v2 /= float64(C)
		rs := 1 / math.Sqrt(v2+eps)
		for j, v := range row {
			y[r*C+j] = (v-mu)*rs*g[j] + b[j]
		}
	}
	return y
}

func refGELU(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
	}
	return y
}

// refLinear computes x·W + b with W [in, out], or x·Wᵀ + b with W [out, in].
func refLinear(x, w, b []float64, in, out int, transW bool) []float64 {
	n := len(x) / in
	y := make([]float64, n*out)
	for r := 0; r < n; r++ {
		for o := 0; o < out; o++ {
			var s float64
			if b != nil {
				s = b[o]
			}
			for i := 0; i < in; i++ {
				wv := w[i*out+o]
				if transW {
					wv = w[o*in+i]
				}
				s += x[r*in+i] * wv
			}
			y[r*out+o] = s
		}
	}
	return y
}

func refBiasAdd(x, b []float64) []float64 {
	y := make([]float64, len(x))
	for i := range x {
		y[i] = x[i] + b[i%len(b)]
	}
	return y
}

// refCrossEntropy is the mean over non-ignored rows of logsumexp − logit[t].
func refCrossEntropy(logits []float64, targets []int32, V int) float64 {
	var total float64
	count := 0
	for r, t := range targets {
		if t == IgnoreIndex {
			continue
		}
		row := logits[r*V : r*V+V]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		var s float64
		for _, v := range row {
			s += math.Exp(v - m)
		}
		total += m + math.Log(s) - row[t]
		count++
	}
	if count == 0 {
		return 0
	}
	return total / float64(count)
}

func refSoftmax(logits []float64, V int) []float64 {
	p := make([]float64, len(logits))
	for r := 0; r < len(logits)/V; r++ {
		row := logits[r*V : r*V+V]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		var s float64
		for _, v := range row {
			s += math.Exp(v - m)
		}
		for j, v := range row {
			p[r*V+j] = math.Exp(v-m) / s
		}
	}
	return p
}

// dot64 is Σ a·b, the scalar through which gradients are checked: the
// upstream gradient of f(x) in Σ R⊙f(x) is R, not all ones.
func dot64(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// numGrad returns the central-difference gradient of f with respect to x,
// perturbing x in place (and restoring it).
func numGrad(f func() float64, x []float64) []float64 {
	const h = 1e-3
	g := make([]float64, len(x))
	for i := range x {
		old := x[i]
		x[i] = old + h
		fp := f()
		x[i] = old - h
		fm := f()
		x[i] = old
		g[i] = (fp - fm) / (2 * h)
	}
	return g
}

// helpers for float32/float64 data

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

func randn32(r *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64() * scale)
	}
	return s
}

func randIDs(r *rand.Rand, n, V int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(r.IntN(V))
	}
	return s
}

func to64(s []float32) []float64 {
	d := make([]float64, len(s))
	for i, v := range s {
		d[i] = float64(v)
	}
	return d
}

// assertClose checks |got − want| ≤ atol + rtol·|want| element-wise.
func assertClose(t *testing.T, name string, got []float32, want []float64, rtol, atol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: len %d, want %d", name, len(got), len(want))
	}
	bad := 0
	for i := range got {
		g, w := float64(got[i]), want[i]
		if !(math.Abs(g-w) <= atol+rtol*math.Abs(w)) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.8g, want %.8g (diff %.3g)", name, i, g, w, g-w)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements out of tolerance (rtol %g, atol %g)", name, bad, len(got), rtol, atol)
	}
}
