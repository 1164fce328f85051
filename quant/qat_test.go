package quant

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// fqGraph builds loss = Σ c ∘ FakeQuant(x, s) and returns the gradients of x
// and (with LSQ) s.
func fqGraph(t *testing.T, x, c, s []float32, rows, cols int, opts FakeQuantOptions) (y, dx, ds []float32) {
	t.Helper()
	g := G.NewGraph()
	xn := G.NewMatrix(g, tensor.Float32, G.WithShape(rows, cols), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(append([]float32(nil), x...)))))
	cn := G.NewMatrix(g, tensor.Float32, G.WithShape(rows, cols), G.WithName("c"), G.WithValue(tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(c))))
	var sn *G.Node
	wrt := G.Nodes{xn}
	if opts.LSQ {
		sn = G.NewVector(g, tensor.Float32, G.WithShape(len(s)), G.WithName("s"), G.WithValue(tensor.New(tensor.WithShape(len(s)), tensor.WithBacking(append([]float32(nil), s...)))))
		wrt = append(wrt, sn)
	}
	yn, err := FakeQuant(xn, sn, opts)
	if err != nil {
		t.Fatal(err)
	}
	loss := G.Must(G.Sum(G.Must(G.HadamardProd(yn, cn))))
	if _, err := G.Grad(loss, wrt...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(wrt...))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	y = append([]float32(nil), yn.Value().Data().([]float32)...)
	gx, _ := xn.Grad()
	dx = append([]float32(nil), gx.Data().([]float32)...)
	if opts.LSQ {
		gs, _ := sn.Grad()
		ds = append([]float32(nil), gs.Data().([]float32)...)
	}
	return y, dx, ds
}

func TestFakeQuantForwardBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	rows, cols := 6, 5
	x, c := randn(rng, rows*cols, 1), randn(rng, rows*cols, 1)
	x[2] = 9 // clipped by the static scale below
	x[7] = -9
	// Per tensor with an observer fixed at ±4: clipping beyond 4.
	obs := &MinMax{Min: -4, Max: 4, seen: true}
	st := &FakeQuantState{} // Observe false: the scale stays 4/127
	y, dx, _ := fqGraph(t, x, c, nil, rows, cols, FakeQuantOptions{Observer: obs, State: st})
	s := float32(4.0 / 127)
	for i, v := range x {
		if want := QuantDequant(v, s); y[i] != want {
			t.Fatalf("forward %d: %v, want %v", i, y[i], want)
		}
		want := c[i]
		if math.Abs(float64(v)) > 4 {
			want = 0 // clipped: no gradient
		}
		if dx[i] != want {
			t.Fatalf("STE gradient %d (x=%v): %v, want %v", i, v, dx[i], want)
		}
	}
	// Per channel from the max: nothing clips, the gradient passes.
	_, dx, _ = fqGraph(t, x, c, nil, rows, cols, FakeQuantOptions{PerChannel: true})
	for i := range x {
		if dx[i] != c[i] {
			t.Fatalf("per-channel STE gradient %d: %v, want %v", i, dx[i], c[i])
		}
	}
}

// TestLSQGradient compares the LSQ scale gradient with finite differences of
// the STE surrogate s·clamp(x/s + δ, −127, 127), δ = round(x/s₀) − x/s₀ held
// fixed (the function whose derivative LSQ defines), times 1/√(N·127).
func TestLSQGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	rows, cols := 8, 3
	x, c := randn(rng, rows*cols, 1), randn(rng, rows*cols, 1)
	x[4] = 30 // clipped above
	x[5] = -30
	for _, perChannel := range []bool{false, true} {
		ns := 1
		if perChannel {
			ns = cols
		}
		s := make([]float32, ns)
		for i := range s {
			s[i] = 0.05 + 0.01*float32(i)
		}
		_, dx, ds := fqGraph(t, x, c, s, rows, cols, FakeQuantOptions{PerChannel: perChannel, LSQ: true})
		for k := range s {
			surrogate := func(sk float64) float64 {
				var l float64
				for i, v := range x {
					kk := 0
					if perChannel {
						kk = i % cols
					}
					if kk != k {
						continue
					}
					s0 := float64(s[k])
					delta := math.Round(float64(v)/s0) - float64(v)/s0
					u := math.Max(-QMax, math.Min(QMax, float64(v)/sk+delta))
					if f := float64(v) / s0; math.Abs(f) >= QMax+0.5 {
						u = math.Copysign(QMax, f)
					}
					l += float64(c[i]) * sk * u
				}
				return l
			}
			h := 1e-4 * float64(s[k])
			num := (surrogate(float64(s[k])+h) - surrogate(float64(s[k])-h)) / (2 * h)
			per := rows * cols
			if perChannel {
				per = rows
			}
			num /= math.Sqrt(float64(per) * QMax)
			if math.Abs(num-float64(ds[k])) > 1e-3*(1+math.Abs(num)) {
				t.Fatalf("perChannel=%v: ds[%d] = %v, finite differences %v", perChannel, k, ds[k], num)
			}
		}
		for i, v := range x {
			sk := s[0]
			if perChannel {
				sk = s[i%cols]
			}
			want := c[i]
			if math.Abs(float64(v)/float64(sk)) >= QMax+0.5 {
				want = 0
			}
			if dx[i] != want {
				t.Fatalf("LSQ x gradient %d: %v, want %v", i, dx[i], want)
			}
		}
	}
}

// TestQATConvert fine-tunes a fake-quant model a few steps (with and without
// LSQ) and checks that the converted int8 model's logits match the
// fake-quant model's.
func TestQATConvert(t *testing.T) {
	for _, lsq := range []bool{false, true} {
		m, data := testModel(t, 3)
		T := m.Config.SeqLen
		in, _ := windows(t, data, 4, T)
		scales, err := Calibrate(m, in, T, 4, nil, func() Observer { return &MinMax{} })
		if err != nil {
			t.Fatal(err)
		}
		q, err := InsertFakeQuant(m, QATOptions{LSQ: lsq, ActScales: scales})
		if err != nil {
			t.Fatal(err)
		}
		train(t, m, data, 3)
		q.Freeze()
		fq, err := m.Logits(in, 4, T)
		if err != nil {
			t.Fatal(err)
		}
		i8, err := q.Convert(false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := i8.Logits(in, 4, T)
		if err != nil {
			t.Fatal(err)
		}
		d, s := maxAbsDiff(fq, got)
		t.Logf("LSQ=%v: max |Δlogit| fake-quant vs int8 = %.3g (max |logit| %.3g)", lsq, d, s)
		if d > 1e-2*s {
			t.Fatalf("LSQ=%v: int8 logits differ from fake-quant by %v", lsq, d)
		}
		// The learned activation scales are in the checkpoint.
		path := filepath.Join(t.TempDir(), "qat.safetensors")
		if err := i8.Save(path); err != nil {
			t.Fatal(err)
		}
		l, err := Load(path)
		if err != nil {
			t.Fatalf("LSQ=%v: loading the converted model: %v", lsq, err)
		}
		again, err := l.Logits(in, 4, T)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := maxAbsDiff(got, again); d != 0 {
			t.Fatalf("LSQ=%v: reloaded logits differ by %g", lsq, d)
		}
		if err := q.Remove(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestObservers(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	x := randn(rng, 10000, 1)
	x[0] = 50 // one outlier
	mm := &MinMax{}
	ma := &MovingAverageMinMax{Momentum: 0.5}
	pc := &Percentile{P: 99.9}
	ms := &MSE{}
	for _, o := range []Observer{mm, ma, pc, ms} {
		o.Observe(x[:5000])
		o.Observe(x[5000:])
		o.Observe([]float32{float32(math.NaN())})
	}
	if got := mm.Scale(); got != 50.0/127 {
		t.Fatalf("min-max scale %v", got)
	}
	if ma.Max >= 50 || ma.Max <= 3 {
		t.Fatalf("moving-average max %v", ma.Max)
	}
	if s := pc.Scale(); s*127 < 2.5 || s*127 > 4.5 {
		t.Fatalf("99.9th percentile range %v", s*127)
	}
	if s := ms.Scale(); s >= mm.Scale() {
		t.Fatalf("MSE scale %v does not clip the outlier", s)
	}
	var empty MinMax
	if empty.Scale() != 1 {
		t.Fatal("empty observer scale")
	}
}
