package nn

import (
	"fmt"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Every op's gradients go through a real TapeMachine and G.Grad, with an
// upstream gradient that is not all ones: cost = Σ op(…) ⊙ R for a fixed
// random R (or a scaled cross-entropy), and are compared with central
// differences of the float64 reference of the same cost.

func matNode(g *G.ExprGraph, name string, data []float32, r, c int) *G.Node {
	return G.NewMatrix(g, G.Float32, G.WithShape(r, c), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(r, c), tensor.WithBacking(data))))
}

func vecNode(g *G.ExprGraph, name string, data []float32) *G.Node {
	return G.NewVector(g, G.Float32, G.WithShape(len(data)), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(len(data)), tensor.WithBacking(data))))
}

// weightedSum returns Σ out ⊙ R with R an input node that is not differentiated.
func weightedSum(t testing.TB, out *G.Node, R []float32) *G.Node {
	t.Helper()
	s := out.Shape()
	Rn := matNode(out.Graph(), fmt.Sprintf("R%d", out.ID()), R, s[0], s[1])
	prod, err := G.HadamardProd(out, Rn)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	return cost
}

// machine differentiates cost with respect to wrt and returns a TapeMachine
// that accumulates into their dual values.
func machine(t *testing.T, cost *G.Node, wrt ...*G.Node) G.VM {
	t.Helper()
	if _, err := G.Grad(cost, wrt...); err != nil {
		t.Fatal(err)
	}
	return G.NewTapeMachine(cost.Graph(), G.BindDualValues(wrt...))
}

// run runs one step and resets the machine for the next.
func run(t *testing.T, m G.VM) {
	t.Helper()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	m.Reset()
}

func gradOf(t *testing.T, n *G.Node) []float32 {
	t.Helper()
	v, err := n.Grad()
	if err != nil {
		t.Fatalf("%v: %v", n, err)
	}
	return append([]float32(nil), v.Data().([]float32)...)
}

func zeroGrad(t *testing.T, ns ...*G.Node) {
	t.Helper()
	for _, n := range ns {
		v, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		clear(v.Data().([]float32))
	}
}

func scalarOf(n *G.Node) float32 {
	switch v := n.Value().(type) {
	case *G.F32:
		return float32(*v)
	default:
		return v.Data().(float32)
	}
}

func TestEmbeddingOp(t *testing.T) {
	const B, T, V, C, tmax = 2, 3, 7, 5, 4
	r := newRand(10)
	wteD, wpeD := randn32(r, V*C, 1), randn32(r, tmax*C, 1)
	R := randn32(r, B*T*C, 1)
	ids := NewIDs(B, T)
	if err := ids.Set([]int32{3, 0, 3, 6, 3, 1}); err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	wte, wpe := matNode(g, "wte", wteD, V, C), matNode(g, "wpe", wpeD, tmax, C)
	out, err := Embedding(wte, wpe, ids)
	if err != nil {
		t.Fatal(err)
	}
	m := machine(t, weightedSum(t, out, R), wte, wpe)
	run(t, m)

	wte64, wpe64, R64 := to64(wteD), to64(wpeD), to64(R)
	assertClose(t, "out", out.Value().Data().([]float32), refEmbedding(wte64, wpe64, ids.Data, T, C), fwdRtol, fwdAtol)
	loss := func() float64 { return dot64(R64, refEmbedding(wte64, wpe64, ids.Data, T, C)) }
	assertClose(t, "dwte", gradOf(t, wte), numGrad(loss, wte64), gradRtol, gradAtol)
	assertClose(t, "dwpe", gradOf(t, wpe), numGrad(loss, wpe64), gradRtol, gradAtol)

	// Refill the ids in place: the same graph embeds the new batch.
	copy(ids.Data, []int32{1, 2, 4, 5, 6, 0})
	zeroGrad(t, wte, wpe)
	run(t, m)
	assertClose(t, "out after refill", out.Value().Data().([]float32), refEmbedding(wte64, wpe64, ids.Data, T, C), fwdRtol, fwdAtol)
	assertClose(t, "dwte after refill", gradOf(t, wte), numGrad(loss, wte64), gradRtol, gradAtol)
}

func TestLayerNormOp(t *testing.T) {
	for _, shape := range [][2]int{{1, 5}, {7, 13}, {3, 64}} {
		n, C := shape[0], shape[1]
		t.Run(fmt.Sprintf("N%dC%d", n, C), func(t *testing.T) {
			const eps = 1e-5
			r := newRand(uint64(n*100 + C))
			xD, gD, bD, R := randn32(r, n*C, 1.5), randn32(r, C, 1), randn32(r, C, 1), randn32(r, n*C, 1)
			g := G.NewGraph()
			x, gamma, beta := matNode(g, "x", xD, n, C), vecNode(g, "gamma", gD), vecNode(g, "beta", bD)
			y, err := LayerNorm(x, gamma, beta, eps)
			if err != nil {
				t.Fatal(err)
			}
			m := machine(t, weightedSum(t, y, R), x, gamma, beta)
			run(t, m)
			x64, g64, b64, R64 := to64(xD), to64(gD), to64(bD), to64(R)
			assertClose(t, "y", y.Value().Data().([]float32), refLayerNorm(x64, g64, b64, C, eps), 1e-4, 1e-5)
			loss := func() float64 { return dot64(R64, refLayerNorm(x64, g64, b64, C, eps)) }
			assertClose(t, "dx", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)
			assertClose(t, "dgamma", gradOf(t, gamma), numGrad(loss, g64), gradRtol, gradAtol)
			assertClose(t, "dbeta", gradOf(t, beta), numGrad(loss, b64), gradRtol, gradAtol)
		})
	}
}

func TestGELUOp(t *testing.T) {
	const n, C = 7, 13
	r := newRand(20)
	xD, R := randn32(r, n*C, 2), randn32(r, n*C, 1)
	g := G.NewGraph()
	x := matNode(g, "x", xD, n, C)
	y, err := GELU(x)
	if err != nil {
		t.Fatal(err)
	}
	m := machine(t, weightedSum(t, y, R), x)
	run(t, m)
	x64, R64 := to64(xD), to64(R)
	assertClose(t, "y", y.Value().Data().([]float32), refGELU(x64), 1e-5, 1e-6)
	loss := func() float64 { return dot64(R64, refGELU(x64)) }
	assertClose(t, "dx", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)
}

func TestLinearOp(t *testing.T) {
	const n, in, out = 7, 5, 13
	for _, transW := range []bool{false, true} {
		for _, bias := range []bool{false, true} {
			t.Run(fmt.Sprintf("T%tB%t", transW, bias), func(t *testing.T) {
				r := newRand(30)
				xD, wD, bD, R := randn32(r, n*in, 1), randn32(r, in*out, 1), randn32(r, out, 1), randn32(r, n*out, 1)
				g := G.NewGraph()
				x := matNode(g, "x", xD, n, in)
				var w *G.Node
				if transW {
					w = matNode(g, "w", wD, out, in)
				} else {
					w = matNode(g, "w", wD, in, out)
				}
				wrt := []*G.Node{x, w}
				var b *G.Node
				var b64 []float64
				if bias {
					b = vecNode(g, "b", bD)
					wrt = append(wrt, b)
					b64 = to64(bD)
				}
				y, err := Linear(x, w, b, LinearOpts{TransW: transW})
				if err != nil {
					t.Fatal(err)
				}
				m := machine(t, weightedSum(t, y, R), wrt...)
				run(t, m)
				x64, w64, R64 := to64(xD), to64(wD), to64(R)
				assertClose(t, "y", y.Value().Data().([]float32), refLinear(x64, w64, b64, in, out, transW), 1e-4, 1e-5)
				loss := func() float64 { return dot64(R64, refLinear(x64, w64, b64, in, out, transW)) }
				assertClose(t, "dx", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)
				assertClose(t, "dw", gradOf(t, w), numGrad(loss, w64), gradRtol, gradAtol)
				if bias {
					assertClose(t, "db", gradOf(t, b), numGrad(loss, b64), gradRtol, gradAtol)
				}
			})
		}
	}
}

func TestBiasAddOp(t *testing.T) {
	const n, C = 3, 13
	r := newRand(40)
	xD, bD, R := randn32(r, n*C, 1), randn32(r, C, 1), randn32(r, n*C, 1)
	g := G.NewGraph()
	x, b := matNode(g, "x", xD, n, C), vecNode(g, "b", bD)
	y, err := BiasAdd(x, b)
	if err != nil {
		t.Fatal(err)
	}
	// GELU after the bias makes x's upstream gradient more than R itself.
	z, err := GELU(y)
	if err != nil {
		t.Fatal(err)
	}
	m := machine(t, weightedSum(t, z, R), x, b)
	run(t, m)
	x64, b64, R64 := to64(xD), to64(bD), to64(R)
	assertClose(t, "y", y.Value().Data().([]float32), refBiasAdd(x64, b64), fwdRtol, fwdAtol)
	loss := func() float64 { return dot64(R64, refGELU(refBiasAdd(x64, b64))) }
	assertClose(t, "dx", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)
	assertClose(t, "db", gradOf(t, b), numGrad(loss, b64), gradRtol, gradAtol)
}

func TestCrossEntropyOp(t *testing.T) {
	const B, T, V = 1, 7, 13
	const scale = 3.7 // the upstream gradient of the loss
	r := newRand(50)
	lD := randn32(r, B*T*V, 2)
	targets := NewIDs(B, T)
	if err := targets.Set([]int32{3, IgnoreIndex, 0, 12, 5, IgnoreIndex, 5}); err != nil {
		t.Fatal(err)
	}
	g := G.NewGraph()
	logits := matNode(g, "logits", lD, B*T, V)
	ce, err := CrossEntropy(logits, targets)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Mul(ce, G.NewConstant(float32(scale)))
	if err != nil {
		t.Fatal(err)
	}
	m := machine(t, cost, logits)
	run(t, m)
	l64 := to64(lD)
	assertClose(t, "loss", []float32{scalarOf(ce)}, []float64{refCrossEntropy(l64, targets.Data, V)}, 1e-5, 1e-6)
	loss := func() float64 { return scale * refCrossEntropy(l64, targets.Data, V) }
	assertClose(t, "dlogits", gradOf(t, logits), numGrad(loss, l64), gradRtol, gradAtol)
}
