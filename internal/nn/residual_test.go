package nn

import (
	"errors"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
)

// TestResidualOp checks Residual against G.Add, bit for bit, and its
// gradients against central differences, with x also feeding the other
// branch (GELU), as a block's residual stream feeds its norm.
func TestResidualOp(t *testing.T) {
	defer func(g int) { parGrain = g }(parGrain)
	parGrain = 16 // several chunks, so the split runs too
	const n, C = 7, 13
	r := newRand(41)
	xD, R := randn32(r, n*C, 1), randn32(r, n*C, 1)
	g := G.NewGraph()
	x := matNode(g, "x", xD, n, C)
	h, err := GELU(x)
	if err != nil {
		t.Fatal(err)
	}
	y, err := Residual(x, h)
	if err != nil {
		t.Fatal(err)
	}
	want, err := G.Add(x, h)
	if err != nil {
		t.Fatal(err)
	}
	z, err := GELU(y)
	if err != nil {
		t.Fatal(err)
	}
	m := machine(t, weightedSum(t, z, R), x)
	run(t, m)
	got, ref := y.Value().Data().([]float32), want.Value().Data().([]float32)
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
			t.Fatalf("y[%d] = %v, G.Add gives %v", i, got[i], ref[i])
		}
	}
	x64, R64 := to64(xD), to64(R)
	loss := func() float64 {
		gx := refGELU(x64)
		s := make([]float64, len(x64))
		for i := range s {
			s[i] = x64[i] + gx[i]
		}
		return dot64(R64, refGELU(s))
	}
	assertClose(t, "dx", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)
}

func TestResidualShapeErrors(t *testing.T) {
	g := G.NewGraph()
	a := matNode(g, "a", make([]float32, 6), 2, 3)
	b := matNode(g, "b", make([]float32, 6), 3, 2)
	if _, err := Residual(a, b); !errors.Is(err, ErrShape) {
		t.Fatalf("Residual of 2×3 and 3×2: %v, want ErrShape", err)
	}
	if _, err := Residual(a, nil); !errors.Is(err, ErrShape) {
		t.Fatalf("Residual with a nil node: %v, want ErrShape", err)
	}
}
