package nn

import (
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/galleon-ml/galleon/internal/cputime"
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

// TestDropoutBits checks the bit mask: its rate, that it is a function of
// its coordinates, that an offset (at any alignment) draws the matching part
// of a larger mask, that bits past n stay clear, and its errors.
func TestDropoutBits(t *testing.T) {
	bit := func(b []uint64, i int) bool { return b[i>>6]>>(uint(i)&63)&1 == 1 }
	const n = 200000
	bits := make([]uint64, (n+63)/64)
	for _, p := range []float32{0.1, 0.5} {
		if err := DropoutBits(bits, n, p, 7, 3, 1, 0); err != nil {
			t.Fatal(err)
		}
		dropped := 0
		for i := range n {
			if !bit(bits, i) {
				dropped++
			}
		}
		sd := math.Sqrt(n * float64(p) * float64(1-p))
		if d := math.Abs(float64(dropped) - n*float64(p)); d > 5*sd {
			t.Errorf("p=%v: %d dropped of %d", p, dropped, n)
		}
	}
	// p = 0 keeps everything.
	if err := DropoutBits(bits, 1000, 0, 1, 2, 3, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if !bit(bits, i) {
			t.Fatalf("p = 0 dropped element %d", i)
		}
	}
	const m = 1001
	a, b := make([]uint64, (m+63)/64), make([]uint64, (m+63)/64)
	DropoutBits(a, m, 0.3, 1, 2, 3, 0)
	DropoutBits(b, m, 0.3, 1, 2, 3, 0)
	if !slices.Equal(a, b) {
		t.Fatal("mask is not a function of its coordinates")
	}
	if a[len(a)-1]>>(m%64) != 0 {
		t.Error("bits past n are set")
	}
	for _, other := range [][3]uint64{{2, 2, 3}, {1, 3, 3}, {1, 2, 4}} {
		DropoutBits(b, m, 0.3, other[0], other[1], other[2], 0)
		same := 0
		for i := range m {
			if bit(a, i) == bit(b, i) {
				same++
			}
		}
		if same > 800 {
			t.Errorf("coordinates %v give nearly the same mask (%d of %d equal)", other, same, m)
		}
	}
	for _, off := range []int{1, 2, 3, 4, 63, 64, 65, 600, 999} {
		tail := make([]uint64, (m-off+63)/64+1)
		tail[len(tail)-1] = ^uint64(0) // cleared by the call
		if err := DropoutBits(tail, m-off, 0.3, 1, 2, 3, uint64(off)); err != nil {
			t.Fatal(err)
		}
		for i := range m - off {
			if bit(tail, i) != bit(a, off+i) {
				t.Fatalf("offset %d: element %d differs from the whole mask's", off, i)
			}
		}
	}
	if err := DropoutBits(a, m, 1, 0, 0, 0, 0); !errors.Is(err, ErrRange) {
		t.Errorf("p = 1: %v", err)
	}
	if err := DropoutBits(a[:3], m, 0.1, 0, 0, 0, 0); !errors.Is(err, ErrShape) {
		t.Errorf("short bits: %v", err)
	}
}

// BenchmarkDropoutBits draws a 1,024×576 mask (one rank-8 LoRA adapter's
// input at B=4, T=256, SmolLM2 width), reporting CPU time per element:
//
//	go test ./internal/nn -run '^$' -bench DropoutBits -cpu 1
func BenchmarkDropoutBits(b *testing.B) {
	const n = 1024 * 576
	bits := make([]uint64, n/64)
	c0 := int64(cputime.Process())
	for b.Loop() {
		DropoutBits(bits, n, 0.1, 1, 2, 3, 0)
	}
	b.ReportMetric(float64(int64(cputime.Process())-c0)/float64(b.N)/n, "cpu-ns/element")
}
