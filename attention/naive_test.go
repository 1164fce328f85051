package attention

import (
	"errors"
	"math"
	"testing"
)

// naiveCases are small configurations covering every mask feature.
var naiveCases = []tcase{
	{B: 1, H: 1, KVH: 1, Tq: 1, Tk: 1, D: 16},
	{B: 2, H: 2, KVH: 1, Tq: 7, Tk: 7, D: 16, Causal: true},
	{B: 1, H: 4, KVH: 2, Tq: 33, Tk: 33, D: 32, Causal: true, Window: 5},
	{B: 2, H: 2, KVH: 2, Tq: 20, Tk: 20, D: 16, Lengths: []int{13, 0}},
	{B: 1, H: 2, KVH: 1, Tq: 5, Tk: 19, D: 16, Causal: true},
	{B: 1, H: 1, KVH: 1, Tq: 9, Tk: 4, D: 16, Causal: true},
	{B: 1, H: 2, KVH: 2, Tq: 12, Tk: 12, D: 16, Window: 3},
}

func TestNaiveMatchesReference(t *testing.T) {
	for _, c := range naiveCases {
		t.Run(c.String(), func(t *testing.T) {
			in := c.inputs(1)
			ref := c.reference(in)
			o, lse, err := NaiveForward(in.q, in.k, in.v, c.opts())
			if err != nil {
				t.Fatal(err)
			}
			dq, dk, dv, err := NaiveBackward(in.q, in.k, in.v, o, lse, in.dO, c.opts())
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range []struct {
				name string
				err  float64
			}{
				{"o", maxErr(t, "o", o, ref.o)},
				{"lse", maxErrLSE(t, lse, ref.lse)},
				{"dq", maxErr(t, "dq", dq, ref.dq)},
				{"dk", maxErr(t, "dk", dk, ref.dk)},
				{"dv", maxErr(t, "dv", dv, ref.dv)},
			} {
				if e.err > 1e-4 {
					t.Errorf("%s: naive float32 error %.3g", e.name, e.err)
				}
			}
		})
	}
}

// TestReferenceGradients checks the float64 reference's gradients by central
// finite differences of its forward pass (loss = Σ o∘dO).
func TestReferenceGradients(t *testing.T) {
	for _, c := range []tcase{
		{B: 1, H: 2, KVH: 1, Tq: 5, Tk: 5, D: 4, Causal: true},
		{B: 2, H: 1, KVH: 1, Tq: 6, Tk: 6, D: 3, Window: 2, Lengths: []int{6, 4}},
	} {
		in := c.inputs(3)
		ref := c.reference(in)
		loss := func() float64 {
			r := c.reference(in)
			var s float64
			n := 0
			for b := 0; b < c.B; b++ {
				for h := 0; h < c.H; h++ {
					for i := 0; i < c.Tq; i++ {
						for _, g := range in.dO.Row(b, h, i) {
							s += float64(g) * r.o[n]
							n++
						}
					}
				}
			}
			return s
		}
		for _, x := range []struct {
			name string
			t    Tensor
			grad []float64
		}{{"q", in.q, ref.dq}, {"k", in.k, ref.dk}, {"v", in.v, ref.dv}} {
			for idx := range x.t.Data {
				const eps = 1e-3
				old := x.t.Data[idx]
				x.t.Data[idx] = old + eps
				lp := loss()
				x.t.Data[idx] = old - eps
				lm := loss()
				x.t.Data[idx] = old
				// The perturbation is rounded to float32: divide by the
				// step actually taken.
				step := float64(old+eps) - float64(old-eps)
				fd := (lp - lm) / step
				if math.Abs(fd-x.grad[idx]) > 1e-3*(1+math.Abs(fd)) {
					t.Errorf("%v d%s[%d]: reference %.6g, finite difference %.6g", c, x.name, idx, x.grad[idx], fd)
				}
			}
		}
	}
}

func TestBadShapes(t *testing.T) {
	good := tcase{B: 2, H: 4, KVH: 2, Tq: 8, Tk: 8, D: 16}.inputs(1)
	o := NewTensor(2, 4, 8, 16)
	lse := make([]float32, 2*4*8)
	bad := func(name string, err error, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: error %v, want %v", name, err, want)
		}
	}
	type fwd func(o Tensor, lse []float32, q, k, v Tensor, opts Options) error
	for _, impl := range []struct {
		name string
		f    fwd
	}{{"naive", NaiveForwardInto}, {"flash", ForwardInto}} {
		f := impl.f
		t.Run(impl.name, func(t *testing.T) {
			bad("mismatched D", f(o, lse, good.q, NewTensor(2, 2, 8, 32), NewTensor(2, 2, 8, 32), Options{}), ErrShape)
			bad("kv heads not dividing", f(o, lse, good.q, NewTensor(2, 3, 8, 16), NewTensor(2, 3, 8, 16), Options{}), ErrShape)
			bad("k and v lengths", f(o, lse, good.q, good.k, NewTensor(2, 2, 9, 16), Options{}), ErrShape)
			bad("batch", f(o, lse, good.q, NewTensor(1, 2, 8, 16), NewTensor(1, 2, 8, 16), Options{}), ErrShape)
			bad("o shape", f(NewTensor(2, 4, 7, 16), lse, good.q, good.k, good.v, Options{}), ErrShape)
			bad("lse length", f(o, lse[1:], good.q, good.k, good.v, Options{}), ErrShape)
			bad("lengths count", f(o, lse, good.q, good.k, good.v, Options{Lengths: []int{8}}), ErrShape)
			bad("length too long", f(o, lse, good.q, good.k, good.v, Options{Lengths: []int{8, 9}}), ErrShape)
			bad("negative length", f(o, lse, good.q, good.k, good.v, Options{Lengths: []int{-1, 8}}), ErrShape)
			short := good.q
			short.Data = short.Data[:len(short.Data)-1]
			bad("short data", f(o, lse, short, good.k, good.v, Options{}), ErrShape)
			bad("NaN scale", f(o, lse, good.q, good.k, good.v, Options{Scale: float32(math.NaN())}), ErrOption)
			bad("negative window", f(o, lse, good.q, good.k, good.v, Options{Window: -1}), ErrOption)
			bad("negative block", f(o, lse, good.q, good.k, good.v, Options{BlockQ: -4}), ErrOption)
		})
	}
	type bwd func(dq, dk, dv, q, k, v, o Tensor, lse []float32, dO Tensor, opts Options) error
	for _, impl := range []struct {
		name string
		f    bwd
	}{{"naive", NaiveBackwardInto}, {"flash", BackwardInto}} {
		f := impl.f
		dq, dk, dv := NewTensor(2, 4, 8, 16), NewTensor(2, 2, 8, 16), NewTensor(2, 2, 8, 16)
		t.Run(impl.name+"/backward", func(t *testing.T) {
			if err := f(dq, dk, dv, good.q, good.k, good.v, o, lse, good.dO, Options{}); err != nil {
				t.Fatalf("valid call: %v", err)
			}
			bad("dq shape", f(NewTensor(2, 4, 8, 8), dk, dv, good.q, good.k, good.v, o, lse, good.dO, Options{}), ErrShape)
			bad("dk shape", f(dq, NewTensor(2, 4, 8, 16), dv, good.q, good.k, good.v, o, lse, good.dO, Options{}), ErrShape)
			bad("dv shape", f(dq, dk, NewTensor(2, 2, 7, 16), good.q, good.k, good.v, o, lse, good.dO, Options{}), ErrShape)
			bad("o shape", f(dq, dk, dv, good.q, good.k, good.v, NewTensor(1, 4, 8, 16), lse, good.dO, Options{}), ErrShape)
			bad("dO shape", f(dq, dk, dv, good.q, good.k, good.v, o, lse, NewTensor(2, 4, 8, 15), Options{}), ErrShape)
			bad("lse length", f(dq, dk, dv, good.q, good.k, good.v, o, lse[:3], good.dO, Options{}), ErrShape)
			bad("kv heads", f(dq, dk, dv, good.q, NewTensor(2, 3, 8, 16), NewTensor(2, 3, 8, 16), o, lse, good.dO, Options{}), ErrShape)
		})
	}
	if err := BackwardInto(NewTensor(2, 4, 8, 16), NewTensor(2, 2, 8, 16), NewTensor(2, 2, 8, 16), good.q, good.k, good.v, o, nil, good.dO, Options{}); !errors.Is(err, ErrShape) {
		t.Errorf("flash backward without lse: %v", err)
	}
	if _, err := Contiguous(make([]float32, 10), 1, 1, 3, 4); !errors.Is(err, ErrShape) {
		t.Errorf("Contiguous with wrong length: %v", err)
	}
	if _, _, _, err := PackedQKV(make([]float32, 10), 1, 2, 1, 1, 4); !errors.Is(err, ErrShape) {
		t.Errorf("PackedQKV with wrong length: %v", err)
	}
}
