package quant

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// int8Shapes are the layer shapes the graph-op tests run: odd sizes in one
// panel, and sizes that need several panels in both directions (and enough
// work for the panels to run on several goroutines). Forward takes the
// int8 GEMV for up to gemvRows rows.
var int8Shapes = []struct{ rows, in, out int }{
	{7, 37, 53},
	{1, 53, 37},
	{3, 1500, 100},
	{9, 700, 300},
	{gemvRows, 301, 1999},
}

// deq64 returns the layer's dequantized weight [Out, In] in float64.
func deq64(l *Linear) []float64 {
	w := make([]float64, l.In*l.Out)
	for o := 0; o < l.Out; o++ {
		for i := 0; i < l.In; i++ {
			w[o*l.In+i] = float64(l.Weight.Data[o*l.In+i]) * float64(l.Weight.Scale[o])
		}
	}
	return w
}

// naiveForward32 is the float32 reference of y = x·ŵᵀ + b, one sequential
// sum per output: the error budget of the tests.
func naiveForward32(l *Linear, x []float32, rows int) []float32 {
	y := make([]float32, rows*l.Out)
	for r := 0; r < rows; r++ {
		for o := 0; o < l.Out; o++ {
			var s float32
			if l.Bias != nil {
				s = l.Bias[o]
			}
			for i := 0; i < l.In; i++ {
				s += x[r*l.In+i] * (float32(l.Weight.Data[o*l.In+i]) * l.Weight.Scale[o])
			}
			y[r*l.Out+o] = s
		}
	}
	return y
}

func maxErr32(got []float32, want []float64) float64 {
	var e float64
	for i := range want {
		e = max(e, math.Abs(float64(got[i])-want[i]))
	}
	return e
}

// TestInt8LinearForward: the panel-wise product (graph op and ActFloat
// Forward) against a float64 reference, within twice the error of a naive
// float32 product plus 1e-6.
func TestInt8LinearForward(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	for _, sh := range int8Shapes {
		for _, bias := range []bool{true, false} {
			w, x := randn(rng, sh.in*sh.out, 0.1), randn(rng, sh.rows*sh.in, 1)
			var b []float32
			if bias {
				b = randn(rng, sh.out, 0.5)
			}
			l, err := NewLinear(w, b, sh.in, sh.out, LinearOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wd := deq64(l)
			ref := make([]float64, sh.rows*sh.out)
			for r := 0; r < sh.rows; r++ {
				for o := 0; o < sh.out; o++ {
					s := 0.0
					if b != nil {
						s = float64(b[o])
					}
					for i := 0; i < sh.in; i++ {
						s += float64(x[r*sh.in+i]) * wd[o*sh.in+i]
					}
					ref[r*sh.out+o] = s
				}
			}
			tol := 2*maxErr32(naiveForward32(l, x, sh.rows), ref) + 1e-6

			g := G.NewGraph()
			xn := G.NodeFromAny(g, tensor.New(tensor.WithShape(sh.rows, sh.in), tensor.WithBacking(x)), G.WithName("x"))
			y, err := Int8Linear(xn, l)
			if err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(g)
			for run := 0; run < 2; run++ { // the op's buffer is reused
				if err := vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				if e := maxErr32(y.Value().Data().([]float32), ref); e > tol {
					t.Errorf("%v bias=%t: graph error %g > %g", sh, bias, e, tol)
				}
				vm.Reset()
			}
			vm.Close()

			yf := make([]float32, sh.rows*sh.out)
			if err := l.Forward(yf, x, sh.rows); err != nil {
				t.Fatal(err)
			}
			if e := maxErr32(yf, ref); e > tol {
				t.Errorf("%v bias=%t: Forward error %g > %g", sh, bias, e, tol)
			}
		}
	}
}

// TestInt8LinearInputGradient: dx of L = Σ R∘y against central differences
// of the float64 reference, within twice the error of a naive float32 dx
// plus 1e-6; the op has no gradient for anything but x.
func TestInt8LinearInputGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 1))
	for _, sh := range int8Shapes {
		w, x, b, R := randn(rng, sh.in*sh.out, 0.1), randn(rng, sh.rows*sh.in, 1), randn(rng, sh.out, 0.5), randn(rng, sh.rows*sh.out, 1)
		l, err := NewLinear(w, b, sh.in, sh.out, LinearOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wd := deq64(l)
		x64 := make([]float64, len(x))
		for i, v := range x {
			x64[i] = float64(v)
		}
		// The loss of one row: a change of x[r, ·] moves only that row's
		// terms.
		loss := func(r int) float64 {
			var L float64
			for o := 0; o < sh.out; o++ {
				y := float64(l.Bias[o])
				for i := 0; i < sh.in; i++ {
					y += x64[r*sh.in+i] * wd[o*sh.in+i]
				}
				L += float64(R[r*sh.out+o]) * y
			}
			return L
		}
		// Central differences on a sample of the inputs (all of them for
		// the small shapes).
		want := map[int]float64{}
		stride := max(1, len(x)/300)
		for k := 0; k < len(x); k += stride {
			const eps = 1e-3
			old := x64[k]
			x64[k] = old + eps
			lp := loss(k / sh.in)
			x64[k] = old - eps
			lm := loss(k / sh.in)
			x64[k] = old
			want[k] = (lp - lm) / (2 * eps)
		}
		// Naive float32 dx = R·ŵ, the error budget.
		var naiveErr float64
		for k, wv := range want {
			r, i := k/sh.in, k%sh.in
			var s float32
			for o := 0; o < sh.out; o++ {
				s += R[r*sh.out+o] * (float32(l.Weight.Data[o*sh.in+i]) * l.Weight.Scale[o])
			}
			naiveErr = max(naiveErr, math.Abs(float64(s)-wv))
		}
		tol := 2*naiveErr + 1e-6

		g := G.NewGraph()
		xn := G.NodeFromAny(g, tensor.New(tensor.WithShape(sh.rows, sh.in), tensor.WithBacking(x)), G.WithName("x"))
		rn := G.NodeFromAny(g, tensor.New(tensor.WithShape(sh.rows, sh.out), tensor.WithBacking(R)), G.WithName("R"))
		y, err := Int8Linear(xn, l)
		if err != nil {
			t.Fatal(err)
		}
		cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, rn))))
		grads, err := G.Grad(cost, xn)
		if err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g)
		for run := 0; run < 2; run++ {
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			dx := grads[0].Value().Data().([]float32)
			if len(dx) != len(x) {
				t.Fatalf("%v: dx has %d values, want %d", sh, len(dx), len(x))
			}
			var e float64
			for k, wv := range want {
				e = max(e, math.Abs(float64(dx[k])-wv))
			}
			if e > tol {
				t.Errorf("%v: dx error %g > %g", sh, e, tol)
			}
			vm.Reset()
		}
		vm.Close()
	}
}

// TestInt8LinearNoFloatWeight: a forward and backward run of a warm graph
// allocates far less than the float32 weight (4·In·Out bytes), which the
// op never materializes.
func TestInt8LinearNoFloatWeight(t *testing.T) {
	const rows, in, out = 16, 512, 1024
	rng := rand.New(rand.NewPCG(23, 1))
	l, err := NewLinear(randn(rng, in*out, 0.1), randn(rng, out, 0.1), in, out, LinearOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	xn := G.NodeFromAny(g, tensor.New(tensor.WithShape(rows, in), tensor.WithBacking(randn(rng, rows*in, 1))), G.WithName("x"))
	y, err := Int8Linear(xn, l)
	if err != nil {
		t.Fatal(err)
	}
	cost := G.Must(G.Sum(y))
	if _, err := G.Grad(cost, xn); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	run := func() {
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		vm.Reset()
	}
	run()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	run()
	y1 := make([]float32, rows*out)
	if err := l.Forward(y1, xn.Value().Data().([]float32), rows); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 4*in*out/4 {
		t.Errorf("a warm forward+backward and a Forward allocated %d bytes; the float32 weight is %d", n, 4*in*out)
	}
}

func TestInt8LinearBadInput(t *testing.T) {
	l, err := NewLinear(make([]float32, 6), nil, 2, 3, LinearOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(4, 3), G.WithName("x"))
	if _, err := Int8Linear(x, l); !errors.Is(err, ErrInput) {
		t.Errorf("x of width 3 for a 2→3 layer: %v, want ErrInput", err)
	}
	if _, err := Int8Linear(x, nil); !errors.Is(err, ErrInput) {
		t.Errorf("nil layer: %v, want ErrInput", err)
	}
	if _, err := Int8Linear(nil, l); !errors.Is(err, ErrInput) {
		t.Errorf("nil x: %v, want ErrInput", err)
	}
	x64 := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 2), G.WithName("x64"))
	if _, err := Int8Linear(x64, l); !errors.Is(err, ErrInput) {
		t.Errorf("float64 x: %v, want ErrInput", err)
	}
}

// TestInt8LinearConcurrentForward: Forward is safe for concurrent use; the
// panel buffers are shared through the free list.
func TestInt8LinearConcurrentForward(t *testing.T) {
	const rows, in, out = 5, 700, 300 // several panels
	rng := rand.New(rand.NewPCG(24, 1))
	l, err := NewLinear(randn(rng, in*out, 0.1), randn(rng, out, 0.1), in, out, LinearOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x := randn(rng, rows*in, 1)
	want := make([]float32, rows*out)
	if err := l.Forward(want, x, rows); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			y := make([]float32, rows*out)
			for range 20 {
				if err := l.Forward(y, x, rows); err != nil {
					errs <- err
					return
				}
				for i := range y {
					if y[i] != want[i] {
						errs <- errors.New("concurrent Forward gave a different result")
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A training graph over a W8A8 layer never packs its weight for the int8
// GEMM (a second copy of 1–2 bytes per weight the graph does not read);
// the first Forward still does.
func TestInt8LinearGraphDoesNotPack(t *testing.T) {
	const rows, in, out = 8, 64, 48
	rng := rand.New(rand.NewPCG(29, 1))
	l, err := NewLinear(randn(rng, in*out, 0.1), nil, in, out, DefaultLinearOptions())
	if err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	xn := G.NodeFromAny(g, tensor.New(tensor.WithShape(rows, in), tensor.WithBacking(randn(rng, rows*in, 1))), G.WithName("x"))
	y, err := Int8Linear(xn, l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(G.Must(G.Sum(y)), xn); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	if l.packed != nil {
		t.Fatal("building and running a training graph packed the weight")
	}
	if err := l.Forward(make([]float32, rows*out), xn.Value().Data().([]float32), rows); err != nil {
		t.Fatal(err)
	}
	if l.packed == nil || l.PackedBytes() == 0 {
		t.Fatal("Forward did not pack the weight")
	}
}
