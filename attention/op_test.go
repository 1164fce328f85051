package attention

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// packInputs copies q, k, v of a self-attention case into a packed QKV
// matrix and returns it with views into it.
func packInputs(c tcase, in inputs) (data []float32, q, k, v Tensor) {
	data = make([]float32, c.B*c.Tq*(c.H+2*c.KVH)*c.D)
	q, k, v, err := PackedQKV(data, c.B, c.Tq, c.H, c.KVH, c.D)
	if err != nil {
		panic(err)
	}
	copyTensor(q, in.q)
	copyTensor(k, in.k)
	copyTensor(v, in.v)
	return data, q, k, v
}

func copyTensor(dst, src Tensor) {
	for b := 0; b < src.B; b++ {
		for h := 0; h < src.H; h++ {
			for t := 0; t < src.T; t++ {
				copy(dst.Row(b, h, t), src.Row(b, h, t))
			}
		}
	}
}

// opGraph is a graph computing cost = Σ attention(qkv)∘W with the gradient
// of the attention input.
type opGraph struct {
	g      *G.ExprGraph
	inputs G.Nodes
	out    *G.Node
	m      G.VM
}

func buildPacked(t *testing.T, c tcase, impl Impl, qkv []float32, w []float32) *opGraph {
	t.Helper()
	g := G.NewGraph()
	width := (c.H + 2*c.KVH) * c.D
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(c.B*c.Tq, width), G.WithName("qkv"),
		G.WithValue(tensor.New(tensor.WithShape(c.B*c.Tq, width), tensor.WithBacking(qkv))))
	out, err := Op(x, OpOptions{B: c.B, T: c.Tq, H: c.H, KVH: c.KVH, Causal: c.Causal, Window: c.Window, Lengths: c.Lengths, Scale: c.Scale, Impl: impl, BlockQ: c.BQ, BlockK: c.BK})
	if err != nil {
		t.Fatal(err)
	}
	return finishGraph(t, g, G.Nodes{x}, out, w)
}

func finishGraph(t *testing.T, g *G.ExprGraph, inputs G.Nodes, out *G.Node, w []float32) *opGraph {
	t.Helper()
	wn := G.NewConstant(tensor.New(tensor.WithShape(out.Shape()...), tensor.WithBacking(w)), G.WithName("w"))
	prod, err := G.HadamardProd(out, wn)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(cost, inputs...); err != nil {
		t.Fatal(err)
	}
	return &opGraph{g: g, inputs: inputs, out: out, m: G.NewTapeMachine(g, G.BindDualValues(inputs...))}
}

// run executes the graph once with zeroed gradients and returns the output
// and the gradients of the inputs.
func (og *opGraph) run(t *testing.T) (out []float32, grads [][]float32) {
	t.Helper()
	og.m.Reset()
	for _, in := range og.inputs {
		if gv, err := in.Grad(); err == nil {
			if d, ok := gv.(*tensor.Dense); ok {
				d.Zero()
			}
		}
	}
	if err := og.m.RunAll(); err != nil {
		t.Fatal(err)
	}
	out = append([]float32(nil), og.out.Value().Data().([]float32)...)
	for _, in := range og.inputs {
		gv, err := in.Grad()
		if err != nil {
			t.Fatal(err)
		}
		grads = append(grads, append([]float32(nil), gv.Data().([]float32)...))
	}
	return out, grads
}

// packedRef is the float64 reference of a packed self-attention: output
// [B·T, H·D] and qkv gradient [B·T, (H+2KVH)·D].
func packedRef(c tcase, ref ref64) (out, grad []float64) {
	width := (c.H + 2*c.KVH) * c.D
	out = make([]float64, c.B*c.Tq*c.H*c.D)
	grad = make([]float64, c.B*c.Tq*width)
	for b := 0; b < c.B; b++ {
		for t := 0; t < c.Tq; t++ {
			row := b*c.Tq + t
			for h := 0; h < c.H; h++ {
				src := ((b*c.H+h)*c.Tq + t) * c.D
				copy(out[row*c.H*c.D+h*c.D:][:c.D], ref.o[src:src+c.D])
				copy(grad[row*width+h*c.D:][:c.D], ref.dq[src:src+c.D])
			}
			for h := 0; h < c.KVH; h++ {
				src := ((b*c.KVH+h)*c.Tk + t) * c.D
				copy(grad[row*width+(c.H+h)*c.D:][:c.D], ref.dk[src:src+c.D])
				copy(grad[row*width+(c.H+c.KVH+h)*c.D:][:c.D], ref.dv[src:src+c.D])
			}
		}
	}
	return out, grad
}

func maxErrFlat(got []float32, want []float64) float64 {
	var e float64
	for i, g := range got {
		d := math.Abs(float64(g) - want[i])
		if d != d {
			return math.Inf(1)
		}
		e = math.Max(e, d)
	}
	return e
}

func TestOpPacked(t *testing.T) {
	for _, c := range []tcase{
		{B: 2, H: 4, KVH: 2, Tq: 37, Tk: 37, D: 16, Causal: true},
		{B: 1, H: 2, KVH: 2, Tq: 130, Tk: 130, D: 64, Causal: true, Window: 40},
		{B: 3, H: 2, KVH: 1, Tq: 20, Tk: 20, D: 32, Causal: true, Lengths: []int{20, 7, 0}},
	} {
		t.Run(c.String(), func(t *testing.T) {
			in := c.inputs(8)
			ref := c.reference(in)
			refOut, refGrad := packedRef(c, ref)
			qkv, _, _, _ := packInputs(c, in)
			w := make([]float32, c.B*c.Tq*c.H*c.D)
			dO, _ := PackedHeads(w, c.B, c.Tq, c.H, c.D)
			copyTensor(dO, in.dO)
			var errs [2][2]float64
			for _, impl := range []Impl{Naive, Flash} {
				og := buildPacked(t, c, impl, append([]float32(nil), qkv...), w)
				out, grads := og.run(t)
				errs[impl][0] = maxErrFlat(out, refOut)
				errs[impl][1] = maxErrFlat(grads[0], refGrad)
				// A second run reuses the op-owned buffers and must agree.
				out2, grads2 := og.run(t)
				for i := range out {
					if out[i] != out2[i] {
						t.Fatalf("%v: second run output differs at %d", impl, i)
					}
				}
				for i := range grads[0] {
					if grads[0][i] != grads2[0][i] {
						t.Fatalf("%v: second run gradient differs at %d", impl, i)
					}
				}
			}
			if errs[Naive][0] > 1e-4 || errs[Naive][1] > 1e-4 {
				t.Errorf("naive op errors %v", errs[Naive])
			}
			checkTol(t, "out", errs[Flash][0], errs[Naive][0])
			checkTol(t, "dqkv", errs[Flash][1], errs[Naive][1])
		})
	}
}

// TestOpFiniteDifferences compares the op's gradients with central finite
// differences of the float64 reference loss Σ attention(qkv)∘W.
func TestOpFiniteDifferences(t *testing.T) {
	c := tcase{B: 2, H: 2, KVH: 1, Tq: 9, Tk: 9, D: 8, Causal: true, Window: 6, Lengths: []int{9, 6}}
	in := c.inputs(9)
	qkv, q, k, v := packInputs(c, in)
	w := make([]float32, c.B*c.Tq*c.H*c.D)
	dO, _ := PackedHeads(w, c.B, c.Tq, c.H, c.D)
	copyTensor(dO, in.dO)
	loss := func() float64 {
		r := c.reference(inputs{q: q, k: k, v: v, dO: in.dO})
		out, _ := packedRef(c, r)
		var s float64
		for i, x := range out {
			s += x * float64(w[i])
		}
		return s
	}
	for _, impl := range []Impl{Flash, Naive} {
		og := buildPacked(t, c, impl, qkv, w)
		_, grads := og.run(t)
		rng := rand.New(rand.NewPCG(3, 4))
		for n := 0; n < 120; n++ {
			i := rng.IntN(len(qkv))
			const eps = 1e-2
			old := qkv[i]
			qkv[i] = old + eps
			lp := loss()
			qkv[i] = old - eps
			lm := loss()
			qkv[i] = old
			fd := (lp - lm) / (float64(old+eps) - float64(old-eps))
			if g := float64(grads[0][i]); math.Abs(g-fd) > 1e-3*(1+math.Abs(fd)) {
				t.Errorf("%v: dqkv[%d] = %.6g, finite difference %.6g", impl, i, g, fd)
			}
		}
	}
}

func TestOpQKV(t *testing.T) {
	c := tcase{B: 2, H: 4, KVH: 2, Tq: 45, Tk: 45, D: 32, Causal: true}
	in := c.inputs(10)
	ref := c.reference(in)
	var errs [2][4]float64
	for _, impl := range []Impl{Naive, Flash} {
		g := G.NewGraph()
		mk := func(name string, x Tensor) *G.Node {
			data := append([]float32(nil), x.Data...)
			return G.NewTensor(g, tensor.Float32, 4, G.WithShape(x.B, x.H, x.T, x.D), G.WithName(name),
				G.WithValue(tensor.New(tensor.WithShape(x.B, x.H, x.T, x.D), tensor.WithBacking(data))))
		}
		q, k, v := mk("q", in.q), mk("k", in.k), mk("v", in.v)
		out, err := OpQKV(q, k, v, OpOptions{Causal: true, Impl: impl})
		if err != nil {
			t.Fatal(err)
		}
		og := finishGraph(t, g, G.Nodes{q, k, v}, out, append([]float32(nil), in.dO.Data...))
		o, grads := og.run(t)
		errs[impl][0] = maxErrFlat(o, ref.o)
		errs[impl][1] = maxErrFlat(grads[0], ref.dq)
		errs[impl][2] = maxErrFlat(grads[1], ref.dk)
		errs[impl][3] = maxErrFlat(grads[2], ref.dv)
	}
	for i, name := range []string{"o", "dq", "dk", "dv"} {
		if errs[Naive][i] > 1e-4 {
			t.Errorf("naive %s error %.3g", name, errs[Naive][i])
		}
		checkTol(t, name, errs[Flash][i], errs[Naive][i])
	}
}

func TestOpErrors(t *testing.T) {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(8, 3*16), G.WithName("x"))
	for name, opts := range map[string]OpOptions{
		"rows":             {B: 3, T: 3, H: 1},
		"width":            {B: 2, T: 4, H: 5},
		"kv heads":         {B: 2, T: 4, H: 3, KVH: 2},
		"no heads":         {B: 2, T: 4},
		"lengths":          {B: 2, T: 4, H: 1, Lengths: []int{5, 1}},
		"negative window":  {B: 2, T: 4, H: 1, Window: -2},
		"implementation":   {B: 2, T: 4, H: 1, Impl: 7},
		"lengths count":    {B: 2, T: 4, H: 1, Lengths: []int{1}},
		"negative workers": {B: 2, T: 4, H: 1, Workers: -1},
	} {
		if _, err := Op(x, opts); !errors.Is(err, ErrShape) && !errors.Is(err, ErrOption) {
			t.Errorf("%s: error %v", name, err)
		}
	}
	if _, err := Op(x, OpOptions{B: 2, T: 4, H: 1}); err != nil {
		t.Errorf("valid options: %v", err)
	}
	q := G.NewTensor(g, tensor.Float32, 4, G.WithShape(1, 4, 5, 8), G.WithName("q"))
	k := G.NewTensor(g, tensor.Float32, 4, G.WithShape(1, 3, 5, 8), G.WithName("k"))
	if _, err := OpQKV(q, k, k, OpOptions{}); !errors.Is(err, ErrShape) {
		t.Errorf("OpQKV with 3 kv heads for 4 heads: %v", err)
	}
}

// TestOpUsePrealloc checks that UsePreallocDo writes what Do returns.
func TestOpUsePrealloc(t *testing.T) {
	c := tcase{B: 2, H: 2, KVH: 1, Tq: 19, Tk: 19, D: 16, Causal: true}
	in := c.inputs(2)
	qkv, _, _, _ := packInputs(c, in)
	w := randData(rand.New(rand.NewPCG(1, 1)), c.B*c.Tq*c.H*c.D)
	og := buildPacked(t, c, Flash, qkv, w)
	out, _ := og.run(t)
	op := og.out.Op().(G.UsePreallocDoer)
	x := tensor.New(tensor.WithShape(c.B*c.Tq, (c.H+2*c.KVH)*c.D), tensor.WithBacking(qkv))
	pre := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(c.B*c.Tq, c.H*c.D))
	v, err := op.UsePreallocDo(pre, x)
	if err != nil {
		t.Fatal(err)
	}
	if v != pre {
		t.Fatal("UsePreallocDo returned another value")
	}
	for i, x := range pre.Data().([]float32) {
		if x != out[i] {
			t.Fatalf("UsePreallocDo differs from Do at %d", i)
		}
	}
}
