package attention

import (
	"math"
	"math/rand/v2"
	"testing"
)

// flashCases cover tile edges: lengths that are not multiples of the tile,
// every supported head size, causal diagonals crossing tiles, GQA and MQA,
// sliding windows, padded batches and fully masked rows.
func flashCases(short bool) []tcase {
	cs := []tcase{
		{B: 1, H: 1, KVH: 1, Tq: 1, Tk: 1, D: 16, Causal: true},
		{B: 2, H: 2, KVH: 1, Tq: 7, Tk: 7, D: 16, Causal: true},
		{B: 1, H: 2, KVH: 2, Tq: 63, Tk: 63, D: 32, Causal: true},
		{B: 1, H: 2, KVH: 1, Tq: 65, Tk: 65, D: 64, Causal: true},
		{B: 1, H: 1, KVH: 1, Tq: 65, Tk: 65, D: 64},
		{B: 1, H: 4, KVH: 1, Tq: 200, Tk: 200, D: 64, Causal: true},
		{B: 2, H: 2, KVH: 2, Tq: 130, Tk: 130, D: 128, Causal: true},
		{B: 1, H: 3, KVH: 3, Tq: 97, Tk: 97, D: 16},
		{B: 1, H: 4, KVH: 2, Tq: 150, Tk: 150, D: 32, Causal: true, Window: 37},
		{B: 1, H: 2, KVH: 1, Tq: 90, Tk: 90, D: 32, Window: 20},
		{B: 3, H: 2, KVH: 1, Tq: 70, Tk: 70, D: 64, Causal: true, Lengths: []int{70, 33, 0}},
		{B: 2, H: 2, KVH: 2, Tq: 50, Tk: 50, D: 16, Lengths: []int{17, 50}},
		{B: 1, H: 2, KVH: 1, Tq: 5, Tk: 77, D: 64, Causal: true},
		{B: 1, H: 1, KVH: 1, Tq: 40, Tk: 9, D: 16, Causal: true},
		{B: 1, H: 2, KVH: 2, Tq: 64, Tk: 64, D: 24, Causal: true},
		// Tile sizes that are not multiples of the register block, and
		// tiny tiles so that diagonals cross many tiles.
		{B: 1, H: 2, KVH: 1, Tq: 100, Tk: 100, D: 32, Causal: true, BQ: 7, BK: 5},
		{B: 1, H: 2, KVH: 2, Tq: 129, Tk: 129, D: 64, Causal: true, BQ: 64, BK: 64},
		{B: 1, H: 1, KVH: 1, Tq: 129, Tk: 129, D: 64, Causal: true, BQ: 48, BK: 128, Scale: 0.3},
	}
	if !short {
		cs = append(cs,
			tcase{B: 1, H: 2, KVH: 1, Tq: 333, Tk: 333, D: 128, Causal: true},
			tcase{B: 2, H: 4, KVH: 4, Tq: 257, Tk: 257, D: 64, Causal: true, Window: 100, Lengths: []int{257, 190}},
		)
	}
	return cs
}

// result32 is one float32 implementation's output and gradients.
type result32 struct {
	o          Tensor
	lse        []float32
	dq, dk, dv Tensor
}

func runNaive(t *testing.T, c tcase, in inputs) result32 {
	t.Helper()
	o, lse, err := NaiveForward(in.q, in.k, in.v, c.opts())
	if err != nil {
		t.Fatal(err)
	}
	dq, dk, dv, err := NaiveBackward(in.q, in.k, in.v, o, lse, in.dO, c.opts())
	if err != nil {
		t.Fatal(err)
	}
	return result32{o, lse, dq, dk, dv}
}

// compare applies the tolerance rule to every output of got that is set.
func compare(t *testing.T, c tcase, got, naive result32, ref ref64) {
	t.Helper()
	checkTol(t, "o", maxErr(t, "o", got.o, ref.o), maxErr(t, "o", naive.o, ref.o))
	if got.lse != nil {
		checkTol(t, "lse", maxErrLSE(t, got.lse, ref.lse), maxErrLSE(t, naive.lse, ref.lse))
	}
	if got.dq.Data != nil {
		checkTol(t, "dq", maxErr(t, "dq", got.dq, ref.dq), maxErr(t, "dq", naive.dq, ref.dq))
		checkTol(t, "dk", maxErr(t, "dk", got.dk, ref.dk), maxErr(t, "dk", naive.dk, ref.dk))
		checkTol(t, "dv", maxErr(t, "dv", got.dv, ref.dv), maxErr(t, "dv", naive.dv, ref.dv))
	}
}

// checkMaskedRows checks that rows with no visible key are exactly zero with
// a log-sum-exp of −Inf.
func checkMaskedRows(t *testing.T, c tcase, o Tensor, lse []float32) {
	t.Helper()
	for b := 0; b < c.B; b++ {
		for h := 0; h < c.H; h++ {
			for i := 0; i < c.Tq; i++ {
				any := false
				for j := 0; j < c.Tk && !any; j++ {
					any = c.refAllowed(b, i, j)
				}
				if any {
					continue
				}
				if l := lse[(b*c.H+h)*c.Tq+i]; !math.IsInf(float64(l), -1) {
					t.Fatalf("masked row (%d %d %d): lse %v", b, h, i, l)
				}
				for _, x := range o.Row(b, h, i) {
					if x != 0 {
						t.Fatalf("masked row (%d %d %d): output %v", b, h, i, x)
					}
				}
			}
		}
	}
}

// TestFlash checks Forward and Backward against the float64 reference with
// the tolerance rule, with every tile kernel.
func TestFlash(t *testing.T) {
	forEachTileKernel(t, func(t *testing.T) {
		for _, c := range flashCases(testing.Short()) {
			t.Run(c.String(), func(t *testing.T) {
				in := c.inputs(12)
				ref := c.reference(in)
				naive := runNaive(t, c, in)
				o, lse, err := Forward(in.q, in.k, in.v, c.opts())
				if err != nil {
					t.Fatal(err)
				}
				dq, dk, dv, err := Backward(in.q, in.k, in.v, o, lse, in.dO, c.opts())
				if err != nil {
					t.Fatal(err)
				}
				compare(t, c, result32{o: o, lse: lse, dq: dq, dk: dk, dv: dv}, naive, ref)
				checkMaskedRows(t, c, o, lse)
			})
		}
	})
}

// TestFlashDeterministic checks that repeated runs, with any number of
// workers, give bit-identical outputs and gradients.
func TestFlashDeterministic(t *testing.T) {
	for _, c := range []tcase{
		{B: 1, H: 4, KVH: 1, Tq: 300, Tk: 300, D: 64, Causal: true}, // split key blocks
		{B: 2, H: 4, KVH: 2, Tq: 150, Tk: 150, D: 32, Causal: true, Window: 50},
	} {
		in := c.inputs(5)
		var first []Tensor
		var firstLSE []float32
		for run, workers := range []int{1, 2, 3, 8, 2} {
			opts := c.opts()
			opts.Workers = workers
			o, lse, err := Forward(in.q, in.k, in.v, opts)
			if err != nil {
				t.Fatal(err)
			}
			dq, dk, dv, err := Backward(in.q, in.k, in.v, o, lse, in.dO, opts)
			if err != nil {
				t.Fatal(err)
			}
			got := []Tensor{o, dq, dk, dv}
			if run == 0 {
				first, firstLSE = got, lse
				continue
			}
			for j, x := range lse {
				if math.Float32bits(x) != math.Float32bits(firstLSE[j]) {
					t.Fatalf("%v: workers=%d: lse differs at %d: %v vs %v", c, workers, j, x, firstLSE[j])
				}
			}
			for i := range got {
				for j, x := range got[i].Data {
					if math.Float32bits(x) != math.Float32bits(first[i].Data[j]) {
						t.Fatalf("%v: workers=%d: output %d differs at %d: %v vs %v", c, workers, i, j, x, first[i].Data[j])
					}
				}
			}
		}
	}
}

// TestFlashRandom checks random configurations (shapes, masks, tile sizes)
// against the reference; skipped with -short.
func TestFlashRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("random configurations are slow under -short")
	}
	rng := rand.New(rand.NewPCG(77, 1))
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }
	for n := 0; n < 40; n++ {
		c := tcase{B: 1 + rng.IntN(3), D: pick(8, 16, 24, 32, 64, 128)}
		c.KVH = 1 + rng.IntN(3)
		c.H = c.KVH * pick(1, 1, 2, 4)
		c.Tq = 1 + rng.IntN(260)
		c.Tk = c.Tq
		c.Causal = rng.IntN(4) != 0
		if rng.IntN(3) == 0 {
			c.Window = 1 + rng.IntN(c.Tq+10)
		}
		switch rng.IntN(4) {
		case 0:
			c.Lengths = make([]int, c.B)
			for b := range c.Lengths {
				c.Lengths[b] = rng.IntN(c.Tk + 1)
			}
		case 1:
			c.Tk = c.Tq + rng.IntN(100) // queries are the last Tq positions
		}
		if rng.IntN(2) == 0 {
			c.BQ, c.BK = 1+rng.IntN(130), 1+rng.IntN(200)
		}
		t.Run(c.String(), func(t *testing.T) {
			in := c.inputs(uint64(n))
			ref := c.reference(in)
			naive := runNaive(t, c, in)
			opts := c.opts()
			opts.Workers = 1 + rng.IntN(3)
			o, lse, err := Forward(in.q, in.k, in.v, opts)
			if err != nil {
				t.Fatal(err)
			}
			dq, dk, dv, err := Backward(in.q, in.k, in.v, o, lse, in.dO, opts)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, c, result32{o: o, lse: lse, dq: dq, dk: dk, dv: dv}, naive, ref)
			checkMaskedRows(t, c, o, lse)
		})
	}
}

// TestFlashConcurrentCalls runs calls from several goroutines at once (as
// data-parallel workers do) and checks each against a lone call.
func TestFlashConcurrentCalls(t *testing.T) {
	cases := []tcase{
		{B: 2, H: 4, KVH: 2, Tq: 130, Tk: 130, D: 32, Causal: true},
		{B: 1, H: 2, KVH: 1, Tq: 77, Tk: 77, D: 64, Window: 20},
		{B: 3, H: 2, KVH: 2, Tq: 50, Tk: 50, D: 16, Causal: true, Lengths: []int{50, 3, 31}},
	}
	type out struct{ o, dq, dk, dv Tensor }
	run := func(c tcase, in inputs) (out, error) {
		o, lse, err := Forward(in.q, in.k, in.v, c.opts())
		if err != nil {
			return out{}, err
		}
		dq, dk, dv, err := Backward(in.q, in.k, in.v, o, lse, in.dO, c.opts())
		return out{o, dq, dk, dv}, err
	}
	ins := make([]inputs, len(cases))
	want := make([]out, len(cases))
	for i, c := range cases {
		ins[i] = c.inputs(uint64(i))
		var err error
		if want[i], err = run(c, ins[i]); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]out, len(cases))
	errs := make([]error, len(cases))
	done := make(chan int)
	for i, c := range cases {
		go func() {
			got[i], errs[i] = run(c, ins[i])
			done <- i
		}()
	}
	for range cases {
		<-done
	}
	for i := range cases {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		for j, pair := range [][2]Tensor{{got[i].o, want[i].o}, {got[i].dq, want[i].dq}, {got[i].dk, want[i].dk}, {got[i].dv, want[i].dv}} {
			for n, x := range pair[0].Data {
				if math.Float32bits(x) != math.Float32bits(pair[1].Data[n]) {
					t.Fatalf("case %d output %d differs at %d when run concurrently", i, j, n)
				}
			}
		}
	}
}
