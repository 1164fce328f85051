package nn

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

var (
	testRows = []int{1, 3, 7}
	testCols = []int{5, 13, 64}
)

const (
	fwdRtol  = 2e-5 // float32 forward vs float64 reference
	fwdAtol  = 2e-6
	gradRtol = 1e-3 // float32 analytic gradient vs float64 central differences
	gradAtol = 1e-4
	// prefill is what gradient slices hold before a backward call, to check
	// that raw backward kernels add rather than overwrite.
	prefill = 0.25
)

func filled(n int, v float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// minusPrefill undoes the prefill so the accumulated gradient compares with
// the reference.
func minusPrefill(s []float32) []float32 {
	d := make([]float32, len(s))
	for i, v := range s {
		d[i] = v - prefill
	}
	return d
}

func TestEmbeddingKernel(t *testing.T) {
	const V = 11
	for _, bt := range [][2]int{{1, 1}, {1, 3}, {7, 1}, {2, 3}, {3, 7}} {
		for _, C := range testCols {
			B, T := bt[0], bt[1]
			t.Run(fmt.Sprintf("B%dT%dC%d", B, T, C), func(t *testing.T) {
				r := newRand(uint64(B*1000 + T*100 + C))
				tmax := T + 2
				wte, wpe := randn32(r, V*C, 1), randn32(r, tmax*C, 1)
				ids := randIDs(r, B*T, V)
				ids[0] = ids[len(ids)-1] // a repeated id exercises the scatter-add
				out := make([]float32, B*T*C)
				if err := EmbeddingForward(out, wte, wpe, ids, T, C, 0); err != nil {
					t.Fatal(err)
				}
				wte64, wpe64 := to64(wte), to64(wpe)
				assertClose(t, "out", out, refEmbedding(wte64, wpe64, ids, T, C), fwdRtol, fwdAtol)

				R := to64(randn32(r, B*T*C, 1))
				dwte, dwpe := filled(V*C, prefill), filled(tmax*C, prefill)
				if err := EmbeddingBackward(dwte, dwpe, toF32(R), ids, T, C, 0); err != nil {
					t.Fatal(err)
				}
				loss := func() float64 { return dot64(R, refEmbedding(wte64, wpe64, ids, T, C)) }
				assertClose(t, "dwte", minusPrefill(dwte), numGrad(loss, wte64), gradRtol, gradAtol)
				assertClose(t, "dwpe", minusPrefill(dwpe), numGrad(loss, wpe64), gradRtol, gradAtol)
			})
		}
	}
}

func TestEmbeddingKernelPositionOffset(t *testing.T) {
	// One token at position 4, as in generation with a cache of 4 tokens.
	const V, C, tmax = 7, 5, 6
	r := newRand(1)
	wte, wpe := randn32(r, V*C, 1), randn32(r, tmax*C, 1)
	out := make([]float32, 2*C)
	ids := []int32{3, 6}
	if err := EmbeddingForward(out, wte, wpe, ids, 1, C, 4); err != nil {
		t.Fatal(err)
	}
	for b, id := range ids {
		for j := 0; j < C; j++ {
			if want := wte[int(id)*C+j] + wpe[4*C+j]; out[b*C+j] != want {
				t.Fatalf("out[%d,%d] = %v, want %v", b, j, out[b*C+j], want)
			}
		}
	}
	if err := EmbeddingForward(out, wte, wpe, ids, 1, C, 6); !errors.Is(err, ErrShape) {
		t.Fatalf("position past wpe: err = %v, want ErrShape", err)
	}
}

func TestLayerNormKernel(t *testing.T) {
	const eps = 1e-5
	for _, n := range testRows {
		for _, C := range testCols {
			t.Run(fmt.Sprintf("N%dC%d", n, C), func(t *testing.T) {
				r := newRand(uint64(n*100 + C))
				x := randn32(r, n*C, 2)
				for i := range x {
					x[i] += 3 // a mean far from 0 checks the two-pass variance
				}
				g, b := randn32(r, C, 1), randn32(r, C, 1)
				y, mean, rstd := make([]float32, n*C), make([]float32, n), make([]float32, n)
				if err := LayerNormForward(y, mean, rstd, x, g, b, C, eps); err != nil {
					t.Fatal(err)
				}
				x64, g64, b64 := to64(x), to64(g), to64(b)
				assertClose(t, "y", y, refLayerNorm(x64, g64, b64, C, eps), 1e-4, 1e-5)

				// Without mean/rstd (inference) the output is the same.
				y2 := make([]float32, n*C)
				if err := LayerNormForward(y2, nil, nil, x, g, b, C, eps); err != nil {
					t.Fatal(err)
				}
				assertClose(t, "y (no stats)", y2, to64(y), 0, 0)

				R := to64(randn32(r, n*C, 1))
				dx, dg, db := filled(n*C, prefill), filled(C, prefill), filled(C, prefill)
				if err := LayerNormBackward(dx, dg, db, toF32(R), x, g, mean, rstd, C); err != nil {
					t.Fatal(err)
				}
				loss := func() float64 { return dot64(R, refLayerNorm(x64, g64, b64, C, eps)) }
				assertClose(t, "dx", minusPrefill(dx), numGrad(loss, x64), gradRtol, gradAtol)
				assertClose(t, "dgamma", minusPrefill(dg), numGrad(loss, g64), gradRtol, gradAtol)
				assertClose(t, "dbeta", minusPrefill(db), numGrad(loss, b64), gradRtol, gradAtol)

				// nil gradients are skipped, the others unchanged.
				dx2 := filled(n*C, prefill)
				if err := LayerNormBackward(dx2, nil, nil, toF32(R), x, g, mean, rstd, C); err != nil {
					t.Fatal(err)
				}
				assertClose(t, "dx alone", dx2, to64(dx), 0, 0)
			})
		}
	}
}

func TestGELUKernel(t *testing.T) {
	for _, n := range []int{1, 7, 255, 257, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := newRand(uint64(n))
			x := randn32(r, n, 3)
			x[0] = 12 // saturated ends
			if n > 1 {
				x[1] = -12
			}
			y := make([]float32, n)
			if err := GELUForward(y, x); err != nil {
				t.Fatal(err)
			}
			x64 := to64(x)
			assertClose(t, "y", y, refGELU(x64), 1e-5, 1e-6)

			R := to64(randn32(r, n, 1))
			dx := filled(n, prefill)
			if err := GELUBackward(dx, toF32(R), x); err != nil {
				t.Fatal(err)
			}
			loss := func() float64 { return dot64(R, refGELU(x64)) }
			assertClose(t, "dx", minusPrefill(dx), numGrad(loss, x64), gradRtol, gradAtol)

			// In place.
			xc := append([]float32(nil), x...)
			if err := GELUForward(xc, xc); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "in place", xc, to64(y), 0, 0)
		})
	}
}

func TestGELUExtremes(t *testing.T) {
	x := []float32{float32(math.Inf(1)), float32(math.Inf(-1)), 1e30, -1e30, 0, float32(math.Copysign(0, -1))}
	y := make([]float32, len(x))
	if err := GELUForward(y, x); err != nil {
		t.Fatal(err)
	}
	want := []float32{float32(math.Inf(1)), float32(math.NaN()), 1e30, 0, 0, 0}
	for i := range want {
		if i == 1 {
			continue // −Inf·0: undefined, as in PyTorch
		}
		if y[i] != want[i] {
			t.Errorf("GELU(%v) = %v, want %v", x[i], y[i], want[i])
		}
	}
}

func TestLinearKernel(t *testing.T) {
	for _, n := range testRows {
		for _, in := range testCols {
			for _, out := range []int{3, 17} {
				for _, transW := range []bool{false, true} {
					for _, bias := range []bool{false, true} {
						name := fmt.Sprintf("N%dIn%dOut%dT%tB%t", n, in, out, transW, bias)
						t.Run(name, func(t *testing.T) { testLinearKernel(t, n, in, out, transW, bias) })
					}
				}
			}
		}
	}
}

func testLinearKernel(t *testing.T, n, in, out int, transW, bias bool) {
	r := newRand(uint64(n*10000 + in*100 + out))
	x, w := randn32(r, n*in, 1), randn32(r, in*out, 1)
	var b []float32
	if bias {
		b = randn32(r, out, 1)
	}
	y := filled(n*out, float32(math.NaN())) // must be overwritten, not read
	fwd := LinearForward
	if transW {
		fwd = LinearForwardTransW
	}
	if err := fwd(y, x, w, b, n, in, out); err != nil {
		t.Fatal(err)
	}
	x64, w64 := to64(x), to64(w)
	var b64 []float64
	if bias {
		b64 = to64(b)
	}
	assertClose(t, "y", y, refLinear(x64, w64, b64, in, out, transW), 1e-4, 1e-5)

	R := to64(randn32(r, n*out, 1))
	dx, dw := filled(n*in, prefill), filled(in*out, prefill)
	var db []float32
	if bias {
		db = filled(out, prefill)
	}
	if err := LinearBackward(dx, dw, db, toF32(R), x, w, n, in, out, transW); err != nil {
		t.Fatal(err)
	}
	loss := func() float64 { return dot64(R, refLinear(x64, w64, b64, in, out, transW)) }
	assertClose(t, "dx", minusPrefill(dx), numGrad(loss, x64), gradRtol, gradAtol)
	assertClose(t, "dw", minusPrefill(dw), numGrad(loss, w64), gradRtol, gradAtol)
	if bias {
		assertClose(t, "db", minusPrefill(db), numGrad(loss, b64), gradRtol, gradAtol)
	}
}

func TestCrossEntropyKernel(t *testing.T) {
	for _, n := range testRows {
		for _, V := range testCols {
			t.Run(fmt.Sprintf("N%dV%d", n, V), func(t *testing.T) {
				r := newRand(uint64(n*100 + V))
				logits := randn32(r, n*V, 3)
				logits[0] += 60 // large logits must not overflow
				targets := randIDs(r, n, V)
				if n > 1 {
					targets[1] = IgnoreIndex
				}
				probs := make([]float32, n*V)
				loss, count, err := CrossEntropyForward(probs, logits, targets, V)
				if err != nil {
					t.Fatal(err)
				}
				wantCount := n
				if n > 1 {
					wantCount--
				}
				if count != wantCount {
					t.Errorf("count = %d, want %d", count, wantCount)
				}
				l64 := to64(logits)
				assertClose(t, "loss", []float32{loss}, []float64{refCrossEntropy(l64, targets, V)}, 1e-5, 1e-6)
				assertClose(t, "probs", probs, refSoftmax(l64, V), 1e-5, 1e-7)

				// In place: the softmax may overwrite the logits.
				inPlace := append([]float32(nil), logits...)
				loss2, _, err := CrossEntropyForward(inPlace, inPlace, targets, V)
				if err != nil {
					t.Fatal(err)
				}
				if loss2 != loss {
					t.Errorf("in place: loss %v, want %v", loss2, loss)
				}
				assertClose(t, "in-place probs", inPlace, to64(probs), 0, 0)

				const g = 1.7
				dl := filled(n*V, prefill)
				if err := CrossEntropyBackward(dl, probs, targets, V, g); err != nil {
					t.Fatal(err)
				}
				lossf := func() float64 { return g * refCrossEntropy(l64, targets, V) }
				assertClose(t, "dlogits", minusPrefill(dl), numGrad(lossf, l64), gradRtol, gradAtol)
			})
		}
	}
}

func TestCrossEntropyAllIgnored(t *testing.T) {
	const V = 4
	logits := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	targets := []int32{IgnoreIndex, IgnoreIndex}
	probs := make([]float32, 8)
	loss, count, err := CrossEntropyForward(probs, logits, targets, V)
	if err != nil || loss != 0 || count != 0 {
		t.Fatalf("loss, count, err = %v, %v, %v; want 0, 0, nil", loss, count, err)
	}
	dl := make([]float32, 8)
	if err := CrossEntropyBackward(dl, probs, targets, V, 1); err != nil {
		t.Fatal(err)
	}
	for i, v := range dl {
		if v != 0 {
			t.Fatalf("dlogits[%d] = %v, want 0", i, v)
		}
	}
}

func TestKernelErrors(t *testing.T) {
	f := make([]float32, 12)
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"embedding id too large", EmbeddingForward(f[:4], f[:8], f[:4], []int32{0, 4}, 2, 2, 0), ErrRange},
		{"embedding negative id", EmbeddingForward(f[:4], f[:8], f[:4], []int32{-1, 0}, 2, 2, 0), ErrRange},
		{"embedding T > Tmax", EmbeddingForward(f[:6], f[:8], f[:4], []int32{0, 1, 2}, 3, 2, 0), ErrShape},
		{"embedding short out", EmbeddingForward(f[:3], f[:8], f[:4], []int32{0, 1}, 2, 2, 0), ErrShape},
		{"embedding bwd id", EmbeddingBackward(f[:8], nil, f[:4], []int32{0, 9}, 2, 2, 0), ErrRange},
		{"layernorm C does not divide", LayerNormForward(f[:5], nil, nil, f[:5], f[:2], f[:2], 2, 1e-5), ErrShape},
		{"layernorm gamma", LayerNormForward(f[:4], nil, nil, f[:4], f[:3], f[:2], 2, 1e-5), ErrShape},
		{"layernorm one stat", LayerNormForward(f[:4], f[:2], nil, f[:4], f[:2], f[:2], 2, 1e-5), ErrShape},
		{"layernorm bwd mean", LayerNormBackward(f[:4], nil, nil, f[:4], f[:4], f[:2], f[:1], f[:2], 2), ErrShape},
		{"gelu", GELUForward(f[:3], f[:4]), ErrShape},
		{"gelu bwd", GELUBackward(f[:4], f[:3], f[:4]), ErrShape},
		{"linear w", LinearForward(f[:4], f[:4], f[:5], nil, 2, 2, 2), ErrShape},
		{"linear rows", LinearForward(f[:4], f[:4], f[:4], nil, 3, 2, 2), ErrShape},
		{"linear bias", LinearForwardTransW(f[:4], f[:4], f[:4], f[:3], 2, 2, 2), ErrShape},
		{"linear zero width", LinearForward(f[:0], f[:0], f[:0], nil, 2, 0, 2), ErrShape},
		{"linear bwd dw", LinearBackward(nil, f[:3], nil, f[:4], f[:4], nil, 2, 2, 2, false), ErrShape},
		{"ce target", ce(f[:4], f[:4], []int32{0, 2}, 2), ErrRange},
		{"ce targets length", ce(f[:4], f[:4], []int32{0}, 2), ErrShape},
		{"ce probs", ce(f[:3], f[:4], []int32{0, 1}, 2), ErrShape},
		{"ce bwd target", CrossEntropyBackward(f[:4], f[:4], []int32{-2, 0}, 2, 1), ErrRange},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, c.err, c.want)
		}
	}
}

func ce(probs, logits []float32, targets []int32, V int) error {
	_, _, err := CrossEntropyForward(probs, logits, targets, V)
	return err
}

func toF32(s []float64) []float32 {
	d := make([]float32, len(s))
	for i, v := range s {
		d[i] = float32(v)
	}
	return d
}

func TestKernelsDoNotAllocate(t *testing.T) {
	const n, C, V = 7, 64, 13
	r := newRand(3)
	x, g, b := randn32(r, n*C, 1), randn32(r, C, 1), randn32(r, C, 1)
	y, mean, rstd := make([]float32, n*C), make([]float32, n), make([]float32, n)
	w := randn32(r, C*C, 1)
	logits, probs := randn32(r, n*V, 1), make([]float32, n*V)
	targets := randIDs(r, n, V)
	wte, wpe := randn32(r, V*C, 1), randn32(r, n*C, 1)
	allocs := testing.AllocsPerRun(10, func() {
		_ = EmbeddingForward(y, wte, wpe, targets, n, C, 0)
		_ = EmbeddingBackward(wte, wpe, y, targets, n, C, 0)
		_ = LayerNormForward(y, mean, rstd, x, g, b, C, 1e-5)
		_ = LayerNormBackward(x, g, b, y, x, g, mean, rstd, C)
		_ = GELUForward(y, x)
		_ = GELUBackward(x, y, x)
		_ = LinearForward(y, x, w, b, n, C, C)
		_ = LinearBackward(x, w, b, y, x, w, n, C, C, false)
		_, _, _ = CrossEntropyForward(probs, logits, targets, V)
		_ = CrossEntropyBackward(logits, probs, targets, V, 1)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call of every kernel, want 0", allocs)
	}
}
