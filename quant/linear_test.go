package quant

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

// refLinear returns x·ŵ + b in float64 with ŵ the dequantized weight [in, out].
func refLinear(x, w, b []float32, rows, in, out int) []float64 {
	y := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for o := 0; o < out; o++ {
			s := 0.0
			if b != nil {
				s = float64(b[o])
			}
			for c := 0; c < in; c++ {
				s += float64(x[r*in+c]) * float64(w[c*out+o])
			}
			y[r*out+o] = s
		}
	}
	return y
}

// actBound returns, per output, Σ_c (s_x/2)·|ŵ_c| for the given row scales:
// the worst case error of quantizing the activations of the non-skipped
// columns against the float product on the same dequantized weights.
func actBound(w []float32, sx float64, skip []bool, in, out, o int) float64 {
	s := 0.0
	for c := 0; c < in; c++ {
		if skip == nil || !skip[c] {
			s += sx / 2 * math.Abs(float64(w[c*out+o]))
		}
	}
	return s
}

func TestLinearModes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	rows, in, out := 7, 45, 37
	w, b, x := randn(rng, in*out, 0.1), randn(rng, out, 0.1), randn(rng, rows*in, 1)
	for _, mode := range []ActMode{ActFloat, ActDynamic, ActStatic} {
		l, err := NewLinear(w, b, in, out, LinearOptions{Act: mode, ActScale: 4.0 / 127})
		if err != nil {
			t.Fatal(err)
		}
		wd := l.Dequantize()
		// Weight error: half a step per element.
		for c := 0; c < in; c++ {
			for o := 0; o < out; o++ {
				if e := math.Abs(float64(w[c*out+o] - wd[c*out+o])); e > float64(l.Weight.Scale[o])/2*(1+1e-6) {
					t.Fatalf("weight error %v", e)
				}
			}
		}
		y := make([]float32, rows*out)
		if err := l.Forward(y, x, rows); err != nil {
			t.Fatal(err)
		}
		ref := refLinear(x, wd, b, rows, in, out)
		for r := 0; r < rows; r++ {
			var sx float64
			switch mode {
			case ActDynamic:
				sx = float64(absMax(x[r*in:(r+1)*in])) / 127
			case ActStatic:
				sx = 4.0 / 127 // |x| < 4 for this data
			}
			for o := 0; o < out; o++ {
				bound := actBound(wd, sx, nil, in, out, o) + 1e-5
				if e := math.Abs(float64(y[r*out+o]) - ref[r*out+o]); e > bound {
					t.Fatalf("%v: (%d,%d) error %v > bound %v", mode, r, o, e, bound)
				}
			}
		}
	}
}

// TestLinearOutliers checks the LLM.int8() decomposition: outlier columns are
// exact (float32), the others are quantized with a scale that ignores the
// outliers, so the error stays within the bound of the inlier scale.
func TestLinearOutliers(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	rows, in, out := 9, 64, 40
	w, b, x := randn(rng, in*out, 0.1), randn(rng, out, 0.1), randn(rng, rows*in, 0.5)
	x[3*in+10] = 60 // column 10 is an outlier (one row suffices)
	x[5*in+33] = -7 // column 33 as well
	skip := make([]bool, in)
	skip[10], skip[33] = true, true
	lo, err := NewLinear(w, b, in, out, LinearOptions{Act: ActDynamic, Threshold: DefaultThreshold})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := NewLinear(w, b, in, out, LinearOptions{Act: ActDynamic})
	wd := lo.Dequantize()
	ref := refLinear(x, wd, b, rows, in, out)
	yo, yn := make([]float32, rows*out), make([]float32, rows*out)
	if err := lo.Forward(yo, x, rows); err != nil {
		t.Fatal(err)
	}
	if err := ln.Forward(yn, x, rows); err != nil {
		t.Fatal(err)
	}
	var errO, errN float64
	for r := 0; r < rows; r++ {
		var sx float64
		for c := 0; c < in; c++ {
			if !skip[c] {
				sx = max(sx, math.Abs(float64(x[r*in+c]))/127)
			}
		}
		for o := 0; o < out; o++ {
			e := math.Abs(float64(yo[r*out+o]) - ref[r*out+o])
			if bound := actBound(wd, sx, skip, in, out, o) + 1e-5; e > bound {
				t.Fatalf("(%d,%d): error %v > bound %v", r, o, e, bound)
			}
			errO = max(errO, e)
			errN = max(errN, math.Abs(float64(yn[r*out+o])-ref[r*out+o]))
		}
	}
	if errO >= errN {
		t.Fatalf("outlier decomposition did not help: max error %v vs %v without", errO, errN)
	}
	t.Logf("max error vs float32: %.3g with outliers in float32, %.3g without", errO, errN)
	// No outliers: identical to the plain layer.
	x2 := randn(rng, rows*in, 0.5)
	if err := lo.Forward(yo, x2, rows); err != nil {
		t.Fatal(err)
	}
	if err := ln.Forward(yn, x2, rows); err != nil {
		t.Fatal(err)
	}
	for i := range yo {
		if yo[i] != yn[i] {
			t.Fatalf("without outliers the results differ at %d", i)
		}
	}
}

func TestLinearErrors(t *testing.T) {
	l, err := NewLinear(make([]float32, 6), nil, 2, 3, LinearOptions{Act: ActDynamic})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Forward(make([]float32, 3), make([]float32, 3), 1); !errors.Is(err, ErrInput) {
		t.Fatalf("bad lengths: %v", err)
	}
	if err := l.Forward(make([]float32, 3), []float32{1, float32(math.Inf(1))}, 1); !errors.Is(err, model.ErrNonFinite) {
		t.Fatalf("Inf input: %v", err)
	}
	if _, err := NewLinear(make([]float32, 6), nil, 2, 3, LinearOptions{Act: ActStatic}); !errors.Is(err, ErrInput) {
		t.Fatalf("static without scale: %v", err)
	}
	if _, err := NewLinear(make([]float32, 5), nil, 2, 3, LinearOptions{}); !errors.Is(err, ErrInput) {
		t.Fatalf("bad weight: %v", err)
	}
}

func TestLinearWithDelta(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	in, out := 20, 12
	w, b := randn(rng, in*out, 0.1), randn(rng, out, 0.1)
	l, err := NewLinear(w, b, in, out, LinearOptions{Act: ActDynamic, Threshold: 6})
	if err != nil {
		t.Fatal(err)
	}
	delta := randn(rng, in*out, 0.01)
	m, err := l.WithDelta(delta)
	if err != nil {
		t.Fatal(err)
	}
	if m.Options() != l.Options() {
		t.Fatalf("options %+v, want %+v", m.Options(), l.Options())
	}
	base, merged := l.Dequantize(), m.Dequantize()
	for i := range delta {
		if e := math.Abs(float64(merged[i] - (base[i] + delta[i]))); e > float64(m.Weight.Scale[i%out])/2*(1+1e-5) {
			t.Fatalf("merged weight %d off by %v", i, e)
		}
	}
	if _, err := l.WithDelta(delta[1:]); !errors.Is(err, ErrInput) {
		t.Fatalf("bad delta: %v", err)
	}
}
