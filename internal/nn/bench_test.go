package nn

import (
	"fmt"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Benchmarks at the tiny preset's sizes: B·T = 8·64 = 512 rows, C = 128,
// V = 256, MLP width 512.
const (
	tinyB, tinyT = 8, 64
	tinyRows     = tinyB * tinyT
	tinyC        = 128
	tinyV        = 256
	tinyMLP      = 512
)

// benchOps times one forward and backward of the ops of this package in the
// graph of out: it builds cost = Σ out ⊙ R, runs the graph once to bind
// every value, then calls Do of the forward op and of its backward ops
// directly, as the TapeMachine would, without the cost's gorgonia ops.
func benchOps(b *testing.B, out *G.Node, flops float64, wrt ...*G.Node) {
	R := randn32(newRand(99), out.Shape().TotalSize(), 1)
	var cost *G.Node
	if out.IsScalar() {
		cost = out
	} else {
		cost = weightedSum(b, out, R)
	}
	m := machineTB(b, cost, wrt...)
	if err := m.RunAll(); err != nil {
		b.Fatal(err)
	}
	type call struct {
		op G.Op
		in []G.Value
	}
	var calls []call
	sorted, err := G.Sort(out.Graph())
	if err != nil {
		b.Fatal(err)
	}
	for i := len(sorted) - 1; i >= 0; i-- { // Sort puts the roots first
		node := sorted[i]
		switch node.Op().(type) {
		case *embeddingOp, *layerNormOp, *geluOp, *linearOp, *biasAddOp, *crossEntropyOp, *gradOp:
		default:
			continue
		}
		c := call{op: node.Op()}
		for it := out.Graph().From(node.ID()); it.Next(); {
			c.in = append(c.in, it.Node().(*G.Node).Value())
		}
		calls = append(calls, c)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, c := range calls {
			if _, err := c.op.Do(c.in...); err != nil {
				b.Fatal(err)
			}
		}
	}
	if flops > 0 {
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	}
}

func machineTB(tb testing.TB, cost *G.Node, wrt ...*G.Node) G.VM {
	tb.Helper()
	if _, err := G.Grad(cost, wrt...); err != nil {
		tb.Fatal(err)
	}
	return G.NewTapeMachine(cost.Graph(), G.BindDualValues(wrt...))
}

func BenchmarkEmbedding(b *testing.B) {
	r := newRand(1)
	g := G.NewGraph()
	wte := matNode(g, "wte", randn32(r, tinyV*tinyC, 1), tinyV, tinyC)
	wpe := matNode(g, "wpe", randn32(r, tinyT*tinyC, 1), tinyT, tinyC)
	ids := NewIDs(tinyB, tinyT)
	copy(ids.Data, randIDs(r, tinyRows, tinyV))
	out, err := Embedding(wte, wpe, ids)
	if err != nil {
		b.Fatal(err)
	}
	benchOps(b, out, 0, wte, wpe)
}

func BenchmarkLayerNorm(b *testing.B) {
	r := newRand(2)
	g := G.NewGraph()
	x := matNode(g, "x", randn32(r, tinyRows*tinyC, 1), tinyRows, tinyC)
	gamma, beta := vecNode(g, "g", randn32(r, tinyC, 1)), vecNode(g, "b", randn32(r, tinyC, 1))
	out, err := LayerNorm(x, gamma, beta, DefaultEps)
	if err != nil {
		b.Fatal(err)
	}
	benchOps(b, out, 0, x, gamma, beta)
}

func BenchmarkGELU(b *testing.B) {
	r := newRand(3)
	g := G.NewGraph()
	x := matNode(g, "x", randn32(r, tinyRows*tinyMLP, 1), tinyRows, tinyMLP)
	out, err := GELU(x)
	if err != nil {
		b.Fatal(err)
	}
	benchOps(b, out, 0, x)
}

func BenchmarkLinear(b *testing.B) {
	for _, c := range []struct {
		name    string
		in, out int
		transW  bool
	}{
		{"c_attn_128x384", tinyC, 3 * tinyC, false},
		{"c_fc_128x512", tinyC, tinyMLP, false},
		{"mlp_c_proj_512x128", tinyMLP, tinyC, false},
		{"head_T_128x256", tinyC, tinyV, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := newRand(4)
			g := G.NewGraph()
			x := matNode(g, "x", randn32(r, tinyRows*c.in, 1), tinyRows, c.in)
			wr, wc := c.in, c.out
			if c.transW {
				wr, wc = c.out, c.in
			}
			w := matNode(g, "w", randn32(r, c.in*c.out, 0.1), wr, wc)
			wrt := []*G.Node{x, w}
			var bias *G.Node
			if !c.transW {
				bias = vecNode(g, "b", randn32(r, c.out, 1))
				wrt = append(wrt, bias)
			}
			out, err := Linear(x, w, bias, LinearOpts{TransW: c.transW})
			if err != nil {
				b.Fatal(err)
			}
			benchOps(b, out, 3*2*float64(tinyRows*c.in*c.out), wrt...)
		})
	}
}

func BenchmarkCrossEntropy(b *testing.B) {
	r := newRand(5)
	g := G.NewGraph()
	logits := matNode(g, "logits", randn32(r, tinyRows*tinyV, 2), tinyRows, tinyV)
	targets := NewIDs(tinyB, tinyT)
	copy(targets.Data, randIDs(r, tinyRows, tinyV))
	loss, err := CrossEntropy(logits, targets)
	if err != nil {
		b.Fatal(err)
	}
	benchOps(b, loss, 0, logits)
}

// BenchmarkStep runs the composed network (embedding → LayerNorm → linear →
// GELU → tied head → cross-entropy) at the tiny preset's sizes through the
// TapeMachine: the ops plus gorgonia's per-instruction overhead.
func BenchmarkStep(b *testing.B) {
	s := netSizes{B: tinyB, T: tinyT, V: tinyV, C: tinyC, H: tinyC, Tmax: tinyT}
	n := buildNet(b, newNetData(s, 8), nil)
	n.step(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n.step(b)
	}
	b.ReportMetric(float64(tinyRows)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkComposedVsFused runs LayerNorm → bias-add → GELU forward and
// backward on [512, 128] through the TapeMachine, once with this package's
// ops and once composed from gorgonia's (mean, broadcast sub/mul/add, pow,
// tanh…), with the same cost Σ out ⊙ R. The composed graph's output is
// checked against the fused one's before timing.
func BenchmarkComposedVsFused(b *testing.B) {
	const rows, C = tinyRows, tinyC
	r := newRand(6)
	xD, gD, bD, biasD := randn32(r, rows*C, 1), randn32(r, C, 1), randn32(r, C, 1), randn32(r, C, 1)
	R := randn32(r, rows*C, 1)
	build := func(fused bool) (G.VM, *G.Node) {
		g := G.NewGraph()
		x := matNode(g, "x", append([]float32(nil), xD...), rows, C)
		gamma, beta, bias := vecNode(g, "g", gD), vecNode(g, "b", bD), vecNode(g, "bias", biasD)
		var out *G.Node
		var err error
		if fused {
			out, err = fusedChain(x, gamma, beta, bias)
		} else {
			out, err = composedChain(x, gamma, beta, bias)
		}
		if err != nil {
			b.Fatal(err)
		}
		return machineTB(b, weightedSum(b, out, R), x, gamma, beta, bias), out
	}
	mf, outF := build(true)
	mc, outC := build(false)
	for _, m := range []G.VM{mf, mc} {
		if err := m.RunAll(); err != nil {
			b.Fatal(err)
		}
		m.Reset()
	}
	want := to64(outF.Value().Data().([]float32))
	got := outC.Value().Data().([]float32)
	for i := range got {
		if math.Abs(float64(got[i])-want[i]) > 1e-4+1e-4*math.Abs(want[i]) {
			b.Fatalf("composed[%d] = %v, fused %v", i, got[i], want[i])
		}
	}
	for _, c := range []struct {
		name string
		m    G.VM
	}{{"fused", mf}, {"gorgonia", mc}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if err := c.m.RunAll(); err != nil {
					b.Fatal(err)
				}
				c.m.Reset()
			}
		})
	}
}

func fusedChain(x, gamma, beta, bias *G.Node) (*G.Node, error) {
	h, err := LayerNorm(x, gamma, beta, DefaultEps)
	if err != nil {
		return nil, err
	}
	if h, err = BiasAdd(h, bias); err != nil {
		return nil, err
	}
	return GELU(h)
}

// composedChain is the same function from gorgonia's ops, as one would
// write it without fused ops (avoiding InverseSqrt, whose gradient is wrong).
func composedChain(x, gamma, beta, bias *G.Node) (out *G.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("composed chain: %v", r)
		}
	}()
	s := x.Shape()
	rows, C := s[0], s[1]
	f32 := func(v float64) *G.Node { return G.NewConstant(float32(v)) }
	col := func(n *G.Node) *G.Node { return G.Must(G.Reshape(n, tensor.Shape{rows, 1})) }
	row := func(n *G.Node) *G.Node { return G.Must(G.Reshape(n, tensor.Shape{1, C})) }

	mean := col(G.Must(G.Mean(x, 1)))
	xc := G.Must(G.BroadcastSub(x, mean, nil, []byte{1}))
	variance := G.Must(G.Mean(G.Must(G.Square(xc)), 1))
	rstd := col(G.Must(G.Pow(G.Must(G.Add(variance, f32(DefaultEps))), f32(-0.5))))
	h := G.Must(G.BroadcastHadamardProd(xc, rstd, nil, []byte{1}))
	h = G.Must(G.BroadcastHadamardProd(h, row(gamma), nil, []byte{0}))
	h = G.Must(G.BroadcastAdd(h, row(beta), nil, []byte{0}))
	h = G.Must(G.BroadcastAdd(h, row(bias), nil, []byte{0}))

	cube := G.Must(G.Cube(h))
	u := G.Must(G.Mul(G.Must(G.Add(h, G.Must(G.Mul(cube, f32(geluK))))), f32(geluC)))
	onePlus := G.Must(G.Add(G.Must(G.Tanh(u)), f32(1)))
	return G.Must(G.Mul(G.Must(G.HadamardProd(h, onePlus)), f32(0.5))), nil
}

// BenchmarkColumnSums times the bias gradient of a linear layer (the column
// sums of dy, [1024, C]) at GPT-2 124M's widths, with the default column
// chunks (colGrain) and with chunks of 64 columns, the earlier default.
func BenchmarkColumnSums(b *testing.B) {
	const rows = 1024
	for _, C := range []int{768, 3072} {
		m := randn32(newRand(9), rows*C, 1)
		s := make([]float32, C)
		for _, grain := range []int{colGrain(C, rows), 64} {
			b.Run(fmt.Sprintf("C=%d/cols=%d", C, grain), func(b *testing.B) {
				b.SetBytes(int64(4 * rows * C))
				for b.Loop() {
					columnSumsLoops.Run(0, columnSumsBody{s, m, C}, C, grain)
				}
			})
		}
	}
}
