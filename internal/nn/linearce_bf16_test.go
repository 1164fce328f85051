package nn

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/galleon-ml/galleon/internal/kernels"
	G "gorgonia.org/gorgonia"
)

// bf16Data returns lceData's case with the weight rounded to bfloat16: the
// bits, and x rounded and the weight widened to float32, the operands the
// bf16 products see.
func bf16Data(c lceCase, seed uint64) (x, xr []float32, w16 []uint16, ww []float32, targets []int32) {
	x, w, targets := lceData(c, seed)
	w16 = make([]uint16, len(w))
	kernels.ToBF16(w16, w)
	ww = make([]float32, len(w))
	kernels.FromBF16(ww, w16)
	xr = make([]float32, len(x))
	kernels.RoundBF16Slice(xr, x)
	return x, xr, w16, ww, targets
}

// maxAbs64 is the largest magnitude of xs.
func maxAbs64(xs []float64) float64 {
	m := 0.0
	for _, v := range xs {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

// TestLinearCrossEntropyBF16Kernel checks the bf16-weight head against a
// float64 reference on the operands it multiplies (x rounded to bfloat16,
// the weight as held): the loss to float32 rounding, and dx against the
// float32 kernel's dx on those operands to the bfloat16 rounding of the
// softmax gradient that its product packs (2⁻⁸ relative).
func TestLinearCrossEntropyBF16Kernel(t *testing.T) {
	for i, c := range lceCases {
		t.Run(fmt.Sprintf("N%dD%dV%dC%dT%t", c.rows, c.D, c.V, c.chunk, c.transW), func(t *testing.T) {
			x, xr, w16, ww, targets := bf16Data(c, uint64(i+1))
			s := NewLinearCEScratch(c.chunk, c.V)
			sum, count, err := LinearCrossEntropyForwardBF16(s, x, w16, targets, c.D, c.V, c.transW)
			if err != nil {
				t.Fatal(err)
			}
			want := refCrossEntropy(refLinear(to64(xr), to64(ww), nil, c.D, c.V, c.transW), targets, c.V)
			assertClose(t, "mean", []float32{float32(sum / float64(count))}, []float64{want}, 1e-5, 1e-6)

			const dloss = 2.5
			dx := filled(len(x), prefill)
			sum2, count2, err := LinearCrossEntropyBackwardBF16(s, dx, x, w16, targets, c.D, c.V, c.transW, dloss)
			if err != nil {
				t.Fatal(err)
			}
			if sum2 != sum || count2 != count {
				t.Errorf("backward's sum %v (%d rows), forward's %v (%d)", sum2, count2, sum, count)
			}
			ref := make([]float32, len(x))
			if _, _, err := LinearCrossEntropyBackward(nil, ref, nil, xr, ww, targets, c.D, c.V, c.transW, dloss); err != nil {
				t.Fatal(err)
			}
			r64 := to64(ref)
			assertClose(t, "dx", minusPrefill(dx), r64, 1e-2, 1e-2*maxAbs64(r64)+1e-7)

			// Without dx the pass is the forward's.
			if sum3, _, err := LinearCrossEntropyBackwardBF16(nil, nil, x, w16, targets, c.D, c.V, c.transW, dloss); err != nil || sum3 != sum {
				t.Errorf("without dx: sum %v, %v; want %v", sum3, err, sum)
			}
		})
	}
}

func TestLinearCrossEntropyBF16Errors(t *testing.T) {
	x, w := make([]float32, 6), make([]uint16, 12)
	for name, c := range map[string]struct {
		err  error
		want error
	}{
		"target range": {second(LinearCrossEntropyForwardBF16(nil, x, w, []int32{0, 4}, 3, 4, false)), ErrRange},
		"w length":     {second(LinearCrossEntropyForwardBF16(nil, x, w[:11], []int32{0, 1}, 3, 4, false)), ErrShape},
		"dx length":    {second(LinearCrossEntropyBackwardBF16(nil, x[:3], x, w, []int32{0, 1}, 3, 4, false, 1)), ErrShape},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", name, c.err, c.want)
		}
	}
	g := G.NewGraph()
	xn := matNode(g, "x", x, 2, 3)
	if _, err := LinearCrossEntropyBF16(xn, w[:11], NewIDs(1, 2), LinearCEOpts{}); !errors.Is(err, ErrShape) {
		t.Errorf("11 weights for D=3: %v", err)
	}
	if _, err := LinearCrossEntropyBF16(xn, w, NewIDs(1, 3), LinearCEOpts{}); !errors.Is(err, ErrShape) {
		t.Errorf("3 targets for 2 rows: %v", err)
	}
}

// TestLinearCrossEntropyBF16Op runs the op in a differentiated graph, x
// through an RMSNorm as the final norm's output in a model: its loss and
// dx are the kernel's, W gets no gradient product, and a second run with
// new targets gives that batch's gradient.
func TestLinearCrossEntropyBF16Op(t *testing.T) {
	for i, c := range lceCases[:4] {
		t.Run(fmt.Sprintf("N%dD%dV%dC%dT%t", c.rows, c.D, c.V, c.chunk, c.transW), func(t *testing.T) {
			xD, _, w16, _, tg := bf16Data(c, uint64(i+20))
			targets := NewIDs(1, c.rows)
			copy(targets.Data, tg)
			g := G.NewGraph()
			x := matNode(g, "x", xD, c.rows, c.D)
			nwD := randn32(newRand(3), c.D, 1)
			xn, err := RMSNorm(x, vecNode(g, "nw", nwD), 1e-6)
			if err != nil {
				t.Fatal(err)
			}
			loss, err := LinearCrossEntropyBF16(xn, w16, targets, LinearCEOpts{TransW: c.transW, Chunk: c.chunk})
			if err != nil {
				t.Fatal(err)
			}
			m := machine(t, loss, x)
			for pass := range 2 {
				if pass == 1 {
					for k := range targets.Data {
						targets.Data[k] = int32((k * 5) % c.V)
					}
					zeroGrad(t, x)
				}
				before := weightGradProducts.Load()
				run(t, m)
				if got := weightGradProducts.Load() - before; got != 0 {
					t.Errorf("%d weight-gradient products for a bf16 head, want 0", got)
				}
				// The kernel on the normalized rows gives the loss and the
				// gradient at the norm's output; RMSNorm's backward maps it
				// back to x.
				h, rstd := make([]float32, len(xD)), make([]float32, c.rows)
				if err := RMSNormForward(h, rstd, xD, nwD, c.D, 1e-6); err != nil {
					t.Fatal(err)
				}
				dh := make([]float32, len(xD))
				sum, count, err := LinearCrossEntropyBackwardBF16(nil, dh, h, w16, targets.Data, c.D, c.V, c.transW, 1)
				if err != nil {
					t.Fatal(err)
				}
				assertClose(t, "loss", []float32{scalarOf(loss)}, []float64{sum / float64(count)}, 1e-6, 1e-7)
				dx, dnw := make([]float32, len(xD)), make([]float32, c.D)
				if err := RMSNormBackward(dx, dnw, dh, xD, nwD, rstd, c.D); err != nil {
					t.Fatal(err)
				}
				assertClose(t, "dx", gradOf(t, x), to64(dx), 1e-5, 1e-6)
			}
		})
	}
}

// TestLinearCEFrozenChunkBound: a frozen head's chunk of logits fits 64 MiB,
// and under gradient checkpointing 32 MiB.
func TestLinearCEFrozenChunkBound(t *testing.T) {
	for _, V := range []int{256, 32000, 49152, 128256, 151936} {
		if c := LinearCEFrozenChunk(V); c < 16 || c%16 != 0 || c > 1024 || c*V*4 > linearCEFrozenBudget && c > 16 {
			t.Errorf("V=%d: chunk %d rows (%d MiB of logits)", V, c, c*V*4>>20)
		}
		if c := LinearCECheckpointChunk(V); c < 16 || c%16 != 0 || c > 1024 || c*V*4 > linearCECheckpointBudget && c > 16 {
			t.Errorf("V=%d: checkpointing chunk %d rows (%d MiB of logits)", V, c, c*V*4>>20)
		}
	}
}

// TestTokenEmbeddingForwardBF16 gathers rows of a bfloat16 table exactly
// as the float32 kernel gathers the widened table, and refuses ids outside
// it.
func TestTokenEmbeddingForwardBF16(t *testing.T) {
	const V, C = 11, 7
	w := randn32(newRand(4), V*C, 1)
	w16 := make([]uint16, len(w))
	kernels.ToBF16(w16, w)
	ww := make([]float32, len(w))
	kernels.FromBF16(ww, w16)
	ids := []int32{3, 0, 10, 3, 7}
	got, want := make([]float32, len(ids)*C), make([]float32, len(ids)*C)
	if err := TokenEmbeddingForwardBF16(got, w16, ids, C); err != nil {
		t.Fatal(err)
	}
	if err := TokenEmbeddingForward(want, ww, ids, C); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("element %d: %v, want %v", i, got[i], want[i])
		}
	}
	if err := TokenEmbeddingForwardBF16(got, w16, []int32{0, 11, 1, 2, 3}, C); !errors.Is(err, ErrRange) {
		t.Errorf("id 11 of 11 rows: %v", err)
	}
	if err := TokenEmbeddingForwardBF16(got[:3], w16, ids, C); !errors.Is(err, ErrShape) {
		t.Errorf("short output: %v", err)
	}
}

// TestLinearCERelease: with opts.Release the op keeps no chunk of logits
// between runs, and its loss and gradients equal, bit for bit, those of the
// op that keeps them, over two runs with different targets (float32 heads
// trained and frozen, and a bfloat16 head).
func TestLinearCERelease(t *testing.T) {
	c := lceCases[1]
	xD, _, w16, _, tg := bf16Data(c, 31)
	_, wD, _ := lceData(c, 31)
	type result struct {
		loss   []float32
		dx, dw [][]float32
	}
	for _, kind := range []string{"f32", "f32-frozen", "bf16"} {
		runs := map[bool]result{}
		for _, release := range []bool{false, true} {
			targets := NewIDs(1, c.rows)
			copy(targets.Data, tg)
			g := G.NewGraph()
			x := matNode(g, "x", xD, c.rows, c.D)
			opts := LinearCEOpts{TransW: c.transW, Chunk: c.chunk, Release: release}
			wr, wc := c.D, c.V
			if c.transW {
				wr, wc = wc, wr
			}
			var loss, w *G.Node
			var err error
			wrt := []*G.Node{x}
			if kind == "bf16" {
				loss, err = LinearCrossEntropyBF16(x, w16, targets, opts)
			} else {
				w = matNode(g, "w", wD, wr, wc)
				if kind == "f32" {
					wrt = append(wrt, w)
				}
				loss, err = LinearCrossEntropy(x, w, targets, opts)
			}
			if err != nil {
				t.Fatal(err)
			}
			m := machine(t, loss, wrt...)
			var r result
			for pass := range 2 {
				if pass == 1 {
					for k := range targets.Data {
						targets.Data[k] = int32((k*7 + 3) % c.V)
					}
					for _, n := range wrt {
						zeroGrad(t, n)
					}
				}
				run(t, m)
				r.loss = append(r.loss, scalarOf(loss))
				r.dx = append(r.dx, slices.Clone(gradOf(t, x)))
				if kind == "f32" {
					r.dw = append(r.dw, slices.Clone(gradOf(t, w)))
				}
				if held := loss.Op().(*linearCEOp).scratch != nil; held == release {
					t.Errorf("%s, Release %t: the op holds logits after a run: %t", kind, release, held)
				}
			}
			runs[release] = r
		}
		if !reflect.DeepEqual(runs[false], runs[true]) {
			t.Errorf("%s: the loss or gradients differ with Release", kind)
		}
	}
}
