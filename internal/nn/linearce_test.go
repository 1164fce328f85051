package nn

import (
	"errors"
	"fmt"
	"testing"

	G "gorgonia.org/gorgonia"
)

type lceCase struct {
	rows, D, V, chunk int
	transW            bool
}

// lceCases: odd sizes, a last chunk shorter than the others, one chunk
// holding every row, a chunk of one row, both layouts of W.
var lceCases = []lceCase{
	{7, 5, 13, 3, false}, {7, 5, 13, 3, true}, {9, 11, 17, 16, false},
	{4, 3, 29, 1, true}, {1, 1, 2, 0, false}, {11, 6, 7, 4, false},
}

func lceData(c lceCase, seed uint64) (x, w []float32, targets []int32) {
	r := newRand(seed)
	x, w = randn32(r, c.rows*c.D, 1), randn32(r, c.D*c.V, 1)
	targets = randIDs(r, c.rows, c.V)
	for i := 1; i < c.rows; i += 3 {
		targets[i] = IgnoreIndex
	}
	return x, w, targets
}

func TestLinearCrossEntropyKernel(t *testing.T) {
	for i, c := range lceCases {
		t.Run(fmt.Sprintf("N%dD%dV%dC%dT%t", c.rows, c.D, c.V, c.chunk, c.transW), func(t *testing.T) {
			x, w, targets := lceData(c, uint64(i+1))
			s := NewLinearCEScratch(c.chunk, c.V)
			sum, count, err := LinearCrossEntropyForward(s, x, w, targets, c.D, c.V, c.transW)
			if err != nil {
				t.Fatal(err)
			}

			// The materialized path: all the logits, then CrossEntropyForward.
			logits, probs := make([]float32, c.rows*c.V), make([]float32, c.rows*c.V)
			if c.transW {
				err = LinearForwardTransW(logits, x, w, nil, c.rows, c.D, c.V)
			} else {
				err = LinearForward(logits, x, w, nil, c.rows, c.D, c.V)
			}
			if err != nil {
				t.Fatal(err)
			}
			mean, count2, err := CrossEntropyForward(probs, logits, targets, c.V)
			if err != nil {
				t.Fatal(err)
			}
			if count != count2 {
				t.Fatalf("count %d, materialized %d", count, count2)
			}
			assertClose(t, "mean vs materialized", []float32{float32(sum / float64(count))}, []float64{float64(mean)}, 1e-6, 1e-6)

			x64, w64 := to64(x), to64(w)
			ref := func() float64 { return refCrossEntropy(refLinear(x64, w64, nil, c.D, c.V, c.transW), targets, c.V) }
			assertClose(t, "mean", []float32{float32(sum / float64(count))}, []float64{ref()}, 1e-5, 1e-6)

			const dloss = 2.5
			dx, dw := filled(len(x), prefill), filled(len(w), prefill)
			sum2, _, err := LinearCrossEntropyBackward(s, dx, dw, x, w, targets, c.D, c.V, c.transW, dloss)
			if err != nil {
				t.Fatal(err)
			}
			if sum2 != sum {
				t.Errorf("backward's sum %v, forward's %v", sum2, sum)
			}
			loss := func() float64 { return dloss * ref() }
			assertClose(t, "dx", minusPrefill(dx), numGrad(loss, x64), gradRtol, gradAtol)
			assertClose(t, "dw", minusPrefill(dw), numGrad(loss, w64), gradRtol, gradAtol)

			// And the materialized gradients agree too.
			dlogits := make([]float32, len(logits))
			if err := CrossEntropyBackward(dlogits, probs, targets, c.V, dloss); err != nil {
				t.Fatal(err)
			}
			mdx, mdw := make([]float32, len(x)), make([]float32, len(w))
			if err := LinearBackward(mdx, mdw, nil, dlogits, x, w, c.rows, c.D, c.V, c.transW); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "dx vs materialized", minusPrefill(dx), to64(mdx), 1e-5, 1e-6)
			assertClose(t, "dw vs materialized", minusPrefill(dw), to64(mdw), 1e-5, 1e-6)

			// nil scratch and nil dw.
			dx2 := filled(len(x), prefill)
			if _, _, err := LinearCrossEntropyBackward(nil, dx2, nil, x, w, targets, c.D, c.V, c.transW, dloss); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "dx alone", dx2, to64(dx), 1e-6, 1e-7)
		})
	}
}

func TestLinearCrossEntropyAllIgnored(t *testing.T) {
	const rows, D, V = 3, 4, 5
	x, w := randn32(newRand(1), rows*D, 1), randn32(newRand(2), D*V, 1)
	targets := []int32{IgnoreIndex, IgnoreIndex, IgnoreIndex}
	dx, dw := make([]float32, rows*D), make([]float32, D*V)
	sum, count, err := LinearCrossEntropyBackward(nil, dx, dw, x, w, targets, D, V, false, 1)
	if err != nil || sum != 0 || count != 0 {
		t.Fatalf("sum %v count %d err %v, want 0 0 nil", sum, count, err)
	}
	for _, v := range append(dx, dw...) {
		if v != 0 {
			t.Fatalf("gradient %v with every row ignored, want 0", v)
		}
	}
}

func TestLinearCrossEntropyErrors(t *testing.T) {
	x, w := make([]float32, 6), make([]float32, 12)
	for name, c := range map[string]struct {
		err  error
		want error
	}{
		"target range": {second(LinearCrossEntropyForward(nil, x, w, []int32{0, 4}, 3, 4, false)), ErrRange},
		"x length":     {second(LinearCrossEntropyForward(nil, x[:5], w, []int32{0, 1}, 3, 4, false)), ErrShape},
		"w length":     {second(LinearCrossEntropyForward(nil, x, w[:11], []int32{0, 1}, 3, 4, false)), ErrShape},
		"scratch V":    {second(LinearCrossEntropyForward(NewLinearCEScratch(2, 5), x, w, []int32{0, 1}, 3, 4, false)), ErrShape},
		"dx length":    {second(LinearCrossEntropyBackward(nil, x[:3], nil, x, w, []int32{0, 1}, 3, 4, false, 1)), ErrShape},
		"zero D":       {second(LinearCrossEntropyForward(nil, nil, nil, []int32{0}, 0, 4, false)), ErrShape},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", name, c.err, c.want)
		}
	}
	g := G.NewGraph()
	xn, wn := matNode(g, "x", x, 2, 3), matNode(g, "w", w, 3, 4)
	if _, err := LinearCrossEntropy(xn, wn, NewIDs(1, 2), LinearCEOpts{TransW: true}); !errors.Is(err, ErrShape) {
		t.Errorf("transW with a [D, V] weight: %v", err)
	}
	if _, err := LinearCrossEntropy(xn, wn, NewIDs(1, 3), LinearCEOpts{}); !errors.Is(err, ErrShape) {
		t.Errorf("3 targets for 2 rows: %v", err)
	}
}

func second(_ float64, _ int, err error) error { return err }

func TestLinearCrossEntropyOp(t *testing.T) {
	for i, c := range lceCases[:4] {
		for _, frozenW := range []bool{false, true} {
			t.Run(fmt.Sprintf("N%dD%dV%dC%dT%tF%t", c.rows, c.D, c.V, c.chunk, c.transW, frozenW), func(t *testing.T) {
				xD, wD, tg := lceData(c, uint64(i+10))
				targets := NewIDs(1, c.rows)
				copy(targets.Data, tg)
				const scale = 3.7
				g := G.NewGraph()
				x := matNode(g, "x", xD, c.rows, c.D)
				var w *G.Node
				if c.transW {
					w = matNode(g, "w", wD, c.V, c.D)
				} else {
					w = matNode(g, "w", wD, c.D, c.V)
				}
				// x passes through RMSNorm so that its gradient flows on
				// into another op, as the final norm's does in a model.
				nw := vecNode(g, "nw", randn32(newRand(3), c.D, 1))
				xn, err := RMSNorm(x, nw, 1e-6)
				if err != nil {
					t.Fatal(err)
				}
				loss, err := LinearCrossEntropy(xn, w, targets, LinearCEOpts{TransW: c.transW, Chunk: c.chunk})
				if err != nil {
					t.Fatal(err)
				}
				cost, err := G.Mul(loss, G.NewConstant(float32(scale)))
				if err != nil {
					t.Fatal(err)
				}
				wrt := []*G.Node{x, w}
				if frozenW {
					wrt = wrt[:1]
				}
				m := machine(t, cost, wrt...)
				before := weightGradProducts.Load()
				run(t, m)
				if got := weightGradProducts.Load() - before; frozenW && got != 0 {
					t.Errorf("%d weight-gradient products with W frozen, want 0", got)
				}
				x64, w64, nw64 := to64(xD), to64(wD), to64(nw.Value().Data().([]float32))
				ref := func() float64 {
					return scale * refCrossEntropy(refLinear(refRMSNorm(x64, nw64, c.D, 1e-6), w64, nil, c.D, c.V, c.transW), targets.Data, c.V)
				}
				assertClose(t, "loss", []float32{scale * scalarOf(loss)}, []float64{ref()}, 1e-5, 1e-6)
				assertClose(t, "dx", gradOf(t, x), numGrad(ref, x64), gradRtol, gradAtol)
				if !frozenW {
					assertClose(t, "dw", gradOf(t, w), numGrad(ref, w64), gradRtol, gradAtol)
				}

				// A second run with new targets: the gradients are those of
				// the new batch, not accumulated inside the op.
				for k := range targets.Data {
					targets.Data[k] = int32((k * 5) % c.V)
				}
				zeroGrad(t, wrt...)
				run(t, m)
				assertClose(t, "dx after refill", gradOf(t, x), numGrad(ref, x64), gradRtol, gradAtol)
				if !frozenW {
					assertClose(t, "dw after refill", gradOf(t, w), numGrad(ref, w64), gradRtol, gradAtol)
				}
			})
		}
	}
}

// TestLinearCrossEntropyEvalGraph builds the op without G.Grad: the
// forward alone, no gradient products.
func TestLinearCrossEntropyEvalGraph(t *testing.T) {
	c := lceCases[0]
	xD, wD, tg := lceData(c, 99)
	targets := NewIDs(1, c.rows)
	copy(targets.Data, tg)
	g := G.NewGraph()
	x, w := matNode(g, "x", xD, c.rows, c.D), matNode(g, "w", wD, c.D, c.V)
	loss, err := LinearCrossEntropy(x, w, targets, LinearCEOpts{Chunk: c.chunk})
	if err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	before := weightGradProducts.Load()
	run(t, m)
	if got := weightGradProducts.Load() - before; got != 0 {
		t.Errorf("%d weight-gradient products without G.Grad, want 0", got)
	}
	want := refCrossEntropy(refLinear(to64(xD), to64(wD), nil, c.D, c.V, false), targets.Data, c.V)
	assertClose(t, "loss", []float32{scalarOf(loss)}, []float64{want}, 1e-5, 1e-6)
}

func TestLinearCrossEntropyDoesNotAllocate(t *testing.T) {
	c := lceCases[0]
	x, w, targets := lceData(c, 5)
	s := NewLinearCEScratch(c.chunk, c.V)
	dx, dw := make([]float32, len(x)), make([]float32, len(w))
	allocs := testing.AllocsPerRun(10, func() {
		_, _, _ = LinearCrossEntropyForward(s, x, w, targets, c.D, c.V, false)
		_, _, _ = LinearCrossEntropyBackward(s, dx, dw, x, w, targets, c.D, c.V, false, 1)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call with scratch, want 0", allocs)
	}
}

// TestLinearCEChunkBound checks the default chunk's logits fit the 256 MiB
// budget at the vocabularies of GPT-2, SmolLM2, Llama 3 and Qwen2.5, and
// that the op and the kernels hold no more than that.
func TestLinearCEChunkBound(t *testing.T) {
	for _, V := range []int{256, 32000, 49152, 50257, 128256, 151936} {
		c := LinearCEChunk(V)
		if c < 16 || c%16 != 0 || c*V*4 > linearCEBudget {
			t.Errorf("V=%d: chunk %d rows (%d MiB of logits)", V, c, c*V*4>>20)
		}
		s := NewLinearCEScratch(0, V)
		if s.Rows() != c || len(s.logits) != c*V {
			t.Errorf("V=%d: scratch of %d rows, %d logits", V, s.Rows(), len(s.logits))
		}
	}
	// The op sizes its scratch from opts.Chunk, capped at the rows.
	x, w, tg := lceData(lceCases[0], 1)
	targets := NewIDs(1, len(tg))
	copy(targets.Data, tg)
	g := G.NewGraph()
	loss, err := LinearCrossEntropy(matNode(g, "x", x, 7, 5), matNode(g, "w", w, 5, 13), targets, LinearCEOpts{Chunk: 3})
	if err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	run(t, m)
	if s := loss.Op().(*linearCEOp).scratch; len(s.logits) != 3*13 {
		t.Errorf("op holds %d logits, want 3 rows of 13", len(s.logits))
	}
}
