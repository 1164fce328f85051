package lora

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
	"github.com/galleon-ml/galleon/model"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestFusedMatchesPair checks the fused adapted layer, on a bf16 base and
// on a frozen float32 one, against the pair of ops it replaces (the base's
// op, downOp and upAddOp, whose
// gradients TestAdaptedLinearGradients and TestDropout check against
// references): the same output and gradients for x, A and B, run after run
// with the dropout masks of the same source and stream, with and without
// dropout, at rank 8 and below, on widths on and off the kernels' 16-element
// steps.
func TestFusedMatchesPair(t *testing.T) {
	for _, c := range []struct {
		rows, in, out, r int
		p                float64
	}{
		{37, 32, 48, 8, 0.25}, {37, 32, 48, 3, 0}, {21, 48, 16, 5, 0.1}, {9, 19, 7, 2, 0.3},
	} {
		for _, dense := range []bool{false, true} {
			t.Run(fmt.Sprintf("%dx%d→%d_r%d_p%v_dense=%t", c.rows, c.in, c.out, c.r, c.p, dense), func(t *testing.T) {
				testFusedMatchesPair(t, c.rows, c.in, c.out, c.r, c.p, dense)
			})
		}
	}
}

func testFusedMatchesPair(t *testing.T, rows, in, out, r int, p float64, dense bool) {
	rng := rand.New(rand.NewPCG(uint64(in), uint64(r)))
	randv := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	w := make([]uint16, out*in)
	for i := range w {
		w[i] = kernels.Float32ToBF16(float32(rng.NormFloat64()))
	}
	bias := randv(out)
	base, err := model.NewBF16Linear(w, in, out, true, bias)
	if err != nil {
		t.Fatal(err)
	}
	// The float32 base: the same weights as W [in, out].
	wf := make([]float32, in*out)
	for o := range out {
		for i := range in {
			wf[i*out+o] = kernels.BF16ToFloat32(w[o*in+i])
		}
	}
	x, A, B, R := randv(rows*in), randv(r*in), randv(out*r), randv(rows*out)
	const scale, stream = 1.75, 99
	type result struct{ y, dx, dA, dB []float32 }
	run := func(fused bool) []result {
		src := &nn.DropoutSource{Seed: 5}
		g := G.NewGraph()
		node := func(name string, v []float32, shape ...int) *G.Node {
			return G.NodeFromAny(g, tensor.New(tensor.WithShape(shape...), tensor.WithBacking(slices.Clone(v))), G.WithName(name))
		}
		xn, an, bn, rn := node("x", x, rows, in), node("A", A, r, in), node("B", B, out, r), node("R", R, rows, out)
		wn, biasn := node("W", wf, in, out), node("bias", bias, out)
		var y *G.Node
		switch {
		case fused && dense:
			if y, err = newFused(denseBase{in: in, out: out, bias: true}, G.Nodes{wn, biasn}, xn, an, bn, scale, p, src, stream); err != nil {
				t.Fatal(err)
			}
		case fused:
			if y, err = newFused(bf16Base{base}, nil, xn, an, bn, scale, p, src, stream); err != nil {
				t.Fatal(err)
			}
		default:
			yb, err := base.BuildGraph(nil, xn)
			if dense {
				yb, err = nn.Linear(xn, wn, biasn, nn.LinearOpts{})
			}
			if err != nil {
				t.Fatal(err)
			}
			h, err := newDown(xn, an, p, src, stream)
			if err != nil {
				t.Fatal(err)
			}
			if y, err = newUpAdd(yb, h, bn, scale, true); err != nil {
				t.Fatal(err)
			}
		}
		cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, rn))))
		grads, err := G.Grad(cost, xn, an, bn)
		if err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g)
		defer vm.Close()
		var res []result
		for step := range 3 {
			src.Step = uint64(step)
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			val := func(n *G.Node) []float32 { return slices.Clone(n.Value().Data().([]float32)) }
			res = append(res, result{val(y), val(grads[0]), val(grads[1]), val(grads[2])})
			vm.Reset()
		}
		return res
	}
	got, want := run(true), run(false)
	for step := range got {
		g, w := got[step], want[step]
		if step > 0 && p > 0 && slices.Equal(g.dA, got[step-1].dA) {
			t.Errorf("step %d: the same gradient of A as the step before: the mask did not change", step)
		}
		for _, c := range []struct {
			name      string
			got, want []float32
		}{{"y", g.y, w.y}, {"dx", g.dx, w.dx}, {"dA", g.dA, w.dA}, {"dB", g.dB, w.dB}} {
			if len(c.got) != len(c.want) {
				t.Fatalf("step %d: %s has %d elements, want %d", step, c.name, len(c.got), len(c.want))
			}
			for i := range c.got {
				if d := math.Abs(float64(c.got[i] - c.want[i])); d > 1e-4*(1+math.Abs(float64(c.want[i]))) {
					t.Fatalf("step %d: %s[%d] = %v, the pair of ops gives %v", step, c.name, i, c.got[i], c.want[i])
				}
			}
		}
	}
}
