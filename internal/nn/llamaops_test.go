package nn

import (
	"errors"
	"fmt"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
)

// float64 references of the Llama family's ops.

func refRMSNorm(x, w []float64, C int, eps float64) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/C; r++ {
		var ss float64
		for _, v := range x[r*C : r*C+C] {
			ss += v * v
		}
		rs := 1 / math.Sqrt(ss/float64(C)+eps)
		for k := range C {
			y[r*C+k] = x[r*C+k] * rs * w[k]
		}
	}
	return y
}

func refSwiGLU(gate, up []float64) []float64 {
	y := make([]float64, len(gate))
	for i, g := range gate {
		y[i] = g / (1 + math.Exp(-g)) * up[i]
	}
	return y
}

// oddShapes are the [rows, C] shapes the kernels and ops are checked at.
var oddShapes = [][2]int{{1, 1}, {1, 5}, {3, 13}, {7, 64}, {5, 67}}

func TestRMSNormKernel(t *testing.T) {
	const eps = 1e-6
	for _, s := range oddShapes {
		n, C := s[0], s[1]
		t.Run(fmt.Sprintf("N%dC%d", n, C), func(t *testing.T) {
			r := newRand(uint64(n*1000 + C))
			x, w, R := randn32(r, n*C, 2), randn32(r, C, 1), randn32(r, n*C, 1)
			y, rstd := make([]float32, n*C), make([]float32, n)
			if err := RMSNormForward(y, rstd, x, w, C, eps); err != nil {
				t.Fatal(err)
			}
			x64, w64, R64 := to64(x), to64(w), to64(R)
			assertClose(t, "y", y, refRMSNorm(x64, w64, C, eps), 1e-5, 1e-6)
			y2 := make([]float32, n*C)
			if err := RMSNormForward(y2, nil, x, w, C, eps); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "y (no stats)", y2, to64(y), 0, 0)

			dx, dw := filled(n*C, prefill), filled(C, prefill)
			if err := RMSNormBackward(dx, dw, R, x, w, rstd, C); err != nil {
				t.Fatal(err)
			}
			loss := func() float64 { return dot64(R64, refRMSNorm(x64, w64, C, eps)) }
			assertClose(t, "dx", minusPrefill(dx), numGrad(loss, x64), gradRtol, gradAtol)
			assertClose(t, "dw", minusPrefill(dw), numGrad(loss, w64), gradRtol, gradAtol)
			dx2 := filled(n*C, prefill)
			if err := RMSNormBackward(dx2, nil, R, x, w, rstd, C); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "dx alone", dx2, to64(dx), 0, 0)
		})
	}
}

func TestSwiGLUKernel(t *testing.T) {
	for _, s := range oddShapes {
		n, I := s[0], s[1]
		t.Run(fmt.Sprintf("N%dI%d", n, I), func(t *testing.T) {
			r := newRand(uint64(n*1000 + I + 7))
			g, u, R := randn32(r, n*I, 3), randn32(r, n*I, 1), randn32(r, n*I, 1)
			y := make([]float32, n*I)
			if err := SwiGLUForward(y, g, u); err != nil {
				t.Fatal(err)
			}
			g64, u64, R64 := to64(g), to64(u), to64(R)
			assertClose(t, "y", y, refSwiGLU(g64, u64), 1e-5, 1e-6)
			dg, du := filled(n*I, prefill), filled(n*I, prefill)
			if err := SwiGLUBackward(dg, du, R, g, u); err != nil {
				t.Fatal(err)
			}
			loss := func() float64 { return dot64(R64, refSwiGLU(g64, u64)) }
			assertClose(t, "dgate", minusPrefill(dg), numGrad(loss, g64), gradRtol, gradAtol)
			assertClose(t, "dup", minusPrefill(du), numGrad(loss, u64), gradRtol, gradAtol)
			du2 := filled(n*I, prefill)
			if err := SwiGLUBackward(nil, du2, R, g, u); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "dup alone", du2, to64(du), 0, 0)
		})
	}
}

func TestSwiGLUExtremes(t *testing.T) {
	g := []float32{-1e4, -100, -20, 0, 20, 100, 1e4}
	u := filled(len(g), 2)
	y := make([]float32, len(g))
	if err := SwiGLUForward(y, g, u); err != nil {
		t.Fatal(err)
	}
	dg, du := make([]float32, len(g)), make([]float32, len(g))
	if err := SwiGLUBackward(dg, du, filled(len(g), 1), g, u); err != nil {
		t.Fatal(err)
	}
	for i := range g {
		for _, v := range []float32{y[i], dg[i], du[i]} {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("gate %g: y %g dgate %g dup %g, want finite", g[i], y[i], dg[i], du[i])
			}
		}
	}
	if y[6] != 2e4 || y[0] != 0 {
		t.Errorf("silu(±1e4)·2 = %g, %g, want 0, 2e4", y[0], y[6])
	}
}

func TestLlamaKernelErrors(t *testing.T) {
	for name, err := range map[string]error{
		"rms C=0":       RMSNormForward(nil, nil, nil, nil, 0, 1e-6),
		"rms ragged x":  RMSNormForward(make([]float32, 5), nil, make([]float32, 5), make([]float32, 2), 2, 1e-6),
		"rms w":         RMSNormForward(make([]float32, 4), nil, make([]float32, 4), make([]float32, 3), 2, 1e-6),
		"rms eps":       RMSNormForward(make([]float32, 4), nil, make([]float32, 4), make([]float32, 2), 2, float32(math.NaN())),
		"rms rstd":      RMSNormBackward(nil, nil, make([]float32, 4), make([]float32, 4), make([]float32, 2), make([]float32, 1), 2),
		"swiglu up":     SwiGLUForward(make([]float32, 3), make([]float32, 3), make([]float32, 2)),
		"swiglu y":      SwiGLUForward(make([]float32, 2), make([]float32, 3), make([]float32, 3)),
		"swiglu dgate":  SwiGLUBackward(make([]float32, 2), nil, make([]float32, 3), make([]float32, 3), make([]float32, 3)),
		"swiglu dy len": SwiGLUBackward(nil, nil, make([]float32, 2), make([]float32, 3), make([]float32, 3)),
	} {
		if !errors.Is(err, ErrShape) {
			t.Errorf("%s: %v, want ErrShape", name, err)
		}
	}
	g := G.NewGraph()
	x := matNode(g, "x", make([]float32, 6), 2, 3)
	w := vecNode(g, "w", make([]float32, 2))
	if _, err := RMSNorm(x, w, 1e-6); !errors.Is(err, ErrShape) {
		t.Errorf("RMSNorm with w of the wrong width: %v", err)
	}
	u := matNode(g, "u", make([]float32, 6), 3, 2)
	if _, err := SwiGLU(x, u); !errors.Is(err, ErrShape) {
		t.Errorf("SwiGLU with transposed shapes: %v", err)
	}
}

func TestRMSNormOp(t *testing.T) {
	for _, s := range oddShapes[1:] {
		n, C := s[0], s[1]
		t.Run(fmt.Sprintf("N%dC%d", n, C), func(t *testing.T) {
			const eps = 1e-5
			r := newRand(uint64(n*77 + C))
			xD, wD, R := randn32(r, n*C, 1.5), randn32(r, C, 1), randn32(r, n*C, 1)
			g := G.NewGraph()
			x, w := matNode(g, "x", xD, n, C), vecNode(g, "w", wD)
			y, err := RMSNorm(x, w, eps)
			if err != nil {
				t.Fatal(err)
			}
			m := machine(t, weightedSum(t, y, R), x, w)
			run(t, m)
			x64, w64, R64 := to64(xD), to64(wD), to64(R)
			assertClose(t, "y", y.Value().Data().([]float32), refRMSNorm(x64, w64, C, eps), 1e-5, 1e-6)
			loss := func() float64 { return dot64(R64, refRMSNorm(x64, w64, C, eps)) }
			assertClose(t, "dx", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)
			assertClose(t, "dw", gradOf(t, w), numGrad(loss, w64), gradRtol, gradAtol)
		})
	}
}

func TestSwiGLUOp(t *testing.T) {
	for _, s := range oddShapes[1:] {
		n, I := s[0], s[1]
		t.Run(fmt.Sprintf("N%dI%d", n, I), func(t *testing.T) {
			r := newRand(uint64(n*31 + I))
			gD, uD, R := randn32(r, n*I, 2), randn32(r, n*I, 1), randn32(r, n*I, 1)
			g := G.NewGraph()
			gate, up := matNode(g, "gate", gD, n, I), matNode(g, "up", uD, n, I)
			y, err := SwiGLU(gate, up)
			if err != nil {
				t.Fatal(err)
			}
			m := machine(t, weightedSum(t, y, R), gate, up)
			run(t, m)
			g64, u64, R64 := to64(gD), to64(uD), to64(R)
			assertClose(t, "y", y.Value().Data().([]float32), refSwiGLU(g64, u64), 1e-5, 1e-6)
			loss := func() float64 { return dot64(R64, refSwiGLU(g64, u64)) }
			assertClose(t, "dgate", gradOf(t, gate), numGrad(loss, g64), gradRtol, gradAtol)
			assertClose(t, "dup", gradOf(t, up), numGrad(loss, u64), gradRtol, gradAtol)
		})
	}
}

// TestLlamaOpsParallel splits small inputs into many chunks so the
// parallel paths run, and checks they give the same bits as the serial one.
func TestLlamaOpsParallel(t *testing.T) {
	const n, C = 37, 29
	r := newRand(5)
	x, w, R := randn32(r, n*C, 1), randn32(r, C, 1), randn32(r, n*C, 1)
	pos, inv := randIDs(r, n, 50), randn32(r, 4, 1)
	kernelsOnce := func() [][]float32 {
		y, rstd, dx, dw := make([]float32, n*C), make([]float32, n), make([]float32, n*C), make([]float32, C)
		s, dg, du := make([]float32, n*C), make([]float32, n*C), make([]float32, n*C)
		if err := RMSNormForward(y, rstd, x, w, C, 1e-6); err != nil {
			t.Fatal(err)
		}
		if err := RMSNormBackward(dx, dw, R, x, w, rstd, C); err != nil {
			t.Fatal(err)
		}
		if err := SwiGLUForward(s, x, R); err != nil {
			t.Fatal(err)
		}
		if err := SwiGLUBackward(dg, du, y, x, R); err != nil {
			t.Fatal(err)
		}
		ry, rdx := make([]float32, n*C), make([]float32, n*C)
		if err := RopeForward(ry, x, C, 3, 8, pos, inv); err != nil {
			t.Fatal(err)
		}
		if err := RopeBackward(rdx, R, C, 3, 8, pos, inv); err != nil {
			t.Fatal(err)
		}
		return [][]float32{y, rstd, dx, dw, s, dg, du, ry, rdx}
	}
	serial := kernelsOnce()
	old := parGrain
	parGrain = 16
	defer func() { parGrain = old }()
	par := kernelsOnce()
	for i := range serial {
		assertClose(t, fmt.Sprintf("output %d", i), par[i], to64(serial[i]), 0, 0)
	}
}

func TestLlamaKernelsDoNotAllocate(t *testing.T) {
	const n, C = 7, 64
	r := newRand(3)
	x, w, y, rstd := randn32(r, n*C, 1), randn32(r, C, 1), make([]float32, n*C), make([]float32, n)
	pos, inv := randIDs(r, n, 50), randn32(r, 16, 1)
	allocs := testing.AllocsPerRun(10, func() {
		_ = RMSNormForward(y, rstd, x, w, C, 1e-6)
		_ = RMSNormBackward(x, w, y, x, w, rstd, C)
		_ = SwiGLUForward(y, x, y)
		_ = SwiGLUBackward(x, y, y, x, y)
		_ = RopeForward(y, x, C, 2, 32, pos, inv)
		_ = RopeBackward(x, y, C, 4, 16, pos, inv[:8])
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call of the Llama kernels, want 0", allocs)
	}
}
