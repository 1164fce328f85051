package quant

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestQuantizeRowsHalfStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	rows, cols := 13, 70
	x := randn(rng, rows*cols, 3)
	x[5] = 0
	for j := 0; j < cols; j++ {
		x[2*cols+j] = 0 // an all-zero row
	}
	r, err := QuantizeRows(x, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	d := make([]float32, len(x))
	if err := r.Dequantize(d); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rows; i++ {
		s := r.Scale[i]
		for j := 0; j < cols; j++ {
			q := r.Data[i*cols+j]
			if q < -QMax || q > QMax {
				t.Fatalf("q = %d out of range", q)
			}
			if e := math.Abs(float64(x[i*cols+j] - d[i*cols+j])); e > float64(s)/2*(1+1e-6) {
				t.Fatalf("(%d,%d): error %v > s/2 = %v", i, j, e, s/2)
			}
		}
	}
	if r.Scale[2] != 1 {
		t.Fatalf("zero row scale %v, want 1", r.Scale[2])
	}
	// Columns: the transpose, per output channel of an [in, out] weight.
	c, err := QuantizeColumns(x, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	dt := make([]float32, len(x))
	if err := c.DequantizeTransposed(dt); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			if e := math.Abs(float64(x[i*cols+j] - dt[i*cols+j])); e > float64(c.Scale[j])/2*(1+1e-6) {
				t.Fatalf("column (%d,%d): error %v > %v", i, j, e, c.Scale[j]/2)
			}
		}
	}
	if _, err := QuantizeRows([]float32{1, float32(math.NaN())}, 1, 2); !errors.Is(err, ErrInput) {
		t.Fatalf("NaN: err = %v", err)
	}
	if _, err := QuantizeRows([]float32{1}, 1, 2); !errors.Is(err, ErrInput) {
		t.Fatalf("bad shape: err = %v", err)
	}
}

func TestQuantizeTensorAndBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	x := randn(rng, 100, 1)
	x[7] = 40 // saturates with s = 0.1
	q := make([]int8, len(x))
	if err := QuantizeTensor(q, x, 0.1); err != nil {
		t.Fatal(err)
	}
	for i, v := range x {
		if math.Abs(float64(v)) <= 12.7 {
			if e := math.Abs(float64(v - float32(q[i])*0.1)); e > 0.05*(1+1e-6) {
				t.Fatalf("element %d: error %v", i, e)
			}
		} else if q[i] != QMax {
			t.Fatalf("element %d = %v: q = %d, want saturation", i, v, q[i])
		}
	}
	if err := QuantizeTensor(q, x, 0); !errors.Is(err, ErrInput) {
		t.Fatalf("zero scale: err = %v", err)
	}
	b, err := QuantizeBlocks(x)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Scale) != 4 {
		t.Fatalf("%d blocks, want 4", len(b.Scale))
	}
	d := make([]float32, len(x))
	if err := b.Dequantize(d); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if e := math.Abs(float64(x[i] - d[i])); e > float64(b.Scale[i/BlockSize])/2*(1+1e-6) {
			t.Fatalf("block element %d: error %v", i, e)
		}
	}
}

func TestRoundTies(t *testing.T) {
	for _, c := range []struct {
		x, s float32
		q    int8
	}{{0.5, 1, 1}, {-0.5, 1, -1}, {1.49, 1, 1}, {200, 1, 127}, {-200, 1, -127}, {float32(math.NaN()), 1, 0}} {
		if got := Round(c.x, c.s); got != c.q {
			t.Errorf("Round(%v, %v) = %d, want %d", c.x, c.s, got, c.q)
		}
	}
}
