package nn

import (
	"errors"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
)

func TestDropoutMaskStatistics(t *testing.T) {
	const n = 200000
	mask := make([]float32, n)
	for _, p := range []float32{0.1, 0.5} {
		if err := DropoutMask(mask, p, 7, 3, 1, 0); err != nil {
			t.Fatal(err)
		}
		zeros := 0
		for _, m := range mask {
			switch m {
			case 0:
				zeros++
			case 1 / (1 - p):
			default:
				t.Fatalf("mask value %v", m)
			}
		}
		// Binomial: 5 standard deviations.
		sd := math.Sqrt(n * float64(p) * float64(1-p))
		if d := math.Abs(float64(zeros) - n*float64(p)); d > 5*sd {
			t.Errorf("p=%v: %d zeros of %d", p, zeros, n)
		}
	}
	// Same coordinates, same mask; another step, stream or seed, another one;
	// an offset draws the matching part of a larger mask.
	a, b := make([]float32, 1000), make([]float32, 1000)
	DropoutMask(a, 0.3, 1, 2, 3, 0)
	DropoutMask(b, 0.3, 1, 2, 3, 0)
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("mask is not a function of its coordinates")
		}
	}
	for _, other := range [][3]uint64{{2, 2, 3}, {1, 3, 3}, {1, 2, 4}} {
		DropoutMask(b, 0.3, other[0], other[1], other[2], 0)
		same := 0
		for i := range a {
			if a[i] == b[i] {
				same++
			}
		}
		if same > 800 {
			t.Errorf("coordinates %v give nearly the same mask (%d of 1000 equal)", other, same)
		}
	}
	tail := make([]float32, 400)
	DropoutMask(tail, 0.3, 1, 2, 3, 600)
	for i := range tail {
		if tail[i] != a[600+i] {
			t.Fatal("offset mask differs from the whole mask's tail")
		}
	}
	if err := DropoutMask(a, 1, 0, 0, 0, 0); !errors.Is(err, ErrRange) {
		t.Errorf("p = 1: %v", err)
	}
}

func TestDropoutOp(t *testing.T) {
	const rows, cols = 7, 13
	r := newRand(21)
	xs := randn32(r, rows*cols, 1)
	R := randn32(r, rows*cols, 1)
	src := &DropoutSource{Seed: 5, Step: 9}
	g := G.NewGraph()
	x := matNode(g, "x", xs, rows, cols)
	y, err := Dropout(x, 0.4, src, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := machine(t, weightedSum(t, y, R), x)
	run(t, m)
	mask := make([]float32, rows*cols)
	DropoutMask(mask, 0.4, 5, 9, 2, 0)
	got := append([]float32(nil), y.Value().Data().([]float32)...) // the op reuses its buffer
	dx := gradOf(t, x)
	for i := range xs {
		if got[i] != xs[i]*mask[i] {
			t.Fatalf("y[%d] = %v, want %v", i, got[i], xs[i]*mask[i])
		}
		// The loss is linear in x: its gradient is exactly R ⊙ mask.
		if dx[i] != R[i]*mask[i] {
			t.Fatalf("dx[%d] = %v, want %v", i, dx[i], R[i]*mask[i])
		}
	}
	// A new step draws a new mask on the next run.
	src.Step++
	m.Reset()
	run(t, m)
	changed := false
	for i, v := range y.Value().Data().([]float32) {
		if v != got[i] {
			changed = true
		}
	}
	if !changed {
		t.Error("the mask did not change with the step")
	}

	if same, err := Dropout(x, 0, src, 0); err != nil || same != x {
		t.Errorf("p = 0 must return x itself: %v", err)
	}
	if _, err := Dropout(x, -0.1, src, 0); !errors.Is(err, ErrRange) {
		t.Errorf("negative p: %v", err)
	}
	if _, err := Dropout(x, 0.1, nil, 0); err == nil {
		t.Error("nil source accepted")
	}
}
