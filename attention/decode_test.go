package attention

import (
	"errors"
	"math"
	"testing"
)

// cacheFrom copies x ([B, KVH, L, D]) into a cache of capacity tcap whose
// unused positions hold NaN, so any read past the length shows.
func cacheFrom(x Tensor, tcap int) Tensor {
	c := NewTensor(x.B, x.H, tcap, x.D)
	for i := range c.Data {
		c.Data[i] = float32(math.NaN())
	}
	for b := 0; b < x.B; b++ {
		for h := 0; h < x.H; h++ {
			for t := 0; t < x.T; t++ {
				copy(c.Row(b, h, t), x.Row(b, h, t))
			}
		}
	}
	return c
}

func TestDecodeMatchesReference(t *testing.T) {
	for _, c := range []tcase{
		{B: 2, H: 4, KVH: 2, Tq: 1, Tk: 1, D: 16, Causal: true},
		{B: 2, H: 4, KVH: 2, Tq: 1, Tk: 300, D: 64, Causal: true},
		{B: 1, H: 4, KVH: 1, Tq: 3, Tk: 700, D: 32, Causal: true},
		{B: 1, H: 2, KVH: 2, Tq: 2, Tk: 513, D: 128, Causal: true, Window: 300},
		{B: 1, H: 2, KVH: 1, Tq: 4, Tk: 77, D: 64},
	} {
		t.Run(c.String(), func(t *testing.T) {
			in := c.inputs(21)
			ref := c.reference(in)
			naive := runNaive(t, c, in)
			kc, vc := cacheFrom(in.k, c.Tk+37), cacheFrom(in.v, c.Tk+37)
			o, err := Decode(in.q, kc, vc, c.Tk, c.opts())
			if err != nil {
				t.Fatal(err)
			}
			compare(t, c, result32{o: o}, naive, ref)
			// Any split over workers gives the same bits (by default small
			// caches are decoded on one goroutine).
			for workers := 1; workers <= 3; workers++ {
				opts := c.opts()
				opts.Workers = workers
				ow, err := Decode(in.q, kc, vc, c.Tk, opts)
				if err != nil {
					t.Fatal(err)
				}
				for i, x := range ow.Data {
					if math.Float32bits(x) != math.Float32bits(o.Data[i]) {
						t.Fatalf("%d workers: element %d is %v, default %v", workers, i, x, o.Data[i])
					}
				}
			}
			// The same rows from the full forward pass.
			full, _, err := Forward(in.q, in.k, in.v, c.opts())
			if err != nil {
				t.Fatal(err)
			}
			for i, x := range o.Data {
				if d := math.Abs(float64(x - full.Data[i])); d > 1e-5 {
					t.Fatalf("decode and forward differ at %d: %v vs %v", i, x, full.Data[i])
				}
			}
		})
	}
}

// TestDecodeLengths checks per-sequence cache lengths against single
// sequences decoded with their own length.
func TestDecodeLengths(t *testing.T) {
	const tcap, d = 600, 32
	lengths := []int{1, 599, 257}
	c := tcase{B: 3, H: 4, KVH: 2, Tq: 1, Tk: tcap, D: d, Causal: true}
	in := c.inputs(4)
	o, err := Decode(in.q, in.k, in.v, 0, Options{Causal: true, Lengths: lengths})
	if err != nil {
		t.Fatal(err)
	}
	for b, l := range lengths {
		cb := tcase{B: 1, H: 4, KVH: 2, Tq: 1, Tk: l, D: d, Causal: true}
		slice := func(x Tensor, tt int) Tensor {
			x.Data = x.Data[b*x.StrideB:]
			x.B, x.T = 1, tt
			return x
		}
		inb := inputs{q: slice(in.q, 1), k: slice(in.k, l), v: slice(in.v, l), dO: slice(in.dO, 1)}
		ref := cb.reference(inb)
		naive := runNaive(t, cb, inb)
		compare(t, cb, result32{o: slice(o, 1)}, naive, ref)
	}
}

func TestDecodeErrors(t *testing.T) {
	in := tcase{B: 1, H: 2, KVH: 1, Tq: 2, Tk: 10, D: 16}.inputs(1)
	for name, err := range map[string]error{
		"length past capacity": second(Decode(in.q, in.k, in.v, 11, Options{})),
		"length below rows":    second(Decode(in.q, in.k, in.v, 1, Options{})),
		"both lengths":         second(Decode(in.q, in.k, in.v, 5, Options{Lengths: []int{5}})),
		"lengths count":        second(Decode(in.q, in.k, in.v, 0, Options{Lengths: []int{5, 5}})),
		"mismatched D":         second(Decode(in.q, NewTensor(1, 1, 10, 8), NewTensor(1, 1, 10, 8), 5, Options{})),
	} {
		if !errors.Is(err, ErrShape) && !errors.Is(err, ErrOption) {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }
