package nn

import (
	"errors"
	"fmt"
	"testing"

	G "gorgonia.org/gorgonia"
)

// TestLinearCatOp checks LinearCat's output against float64 products put
// side by side, and its input and weight gradients against finite
// differences, at odd shapes with weights of different widths.
func TestLinearCatOp(t *testing.T) {
	for _, s := range [][]int{{1, 1, 1}, {3, 5, 7, 2}, {7, 13, 9, 3, 3}, {5, 67, 33, 17}} {
		n, in, outs := s[0], s[1], s[2:]
		t.Run(fmt.Sprintf("N%din%dout%v", n, in, outs), func(t *testing.T) {
			r := newRand(uint64(n*97 + in))
			g := G.NewGraph()
			xD := randn32(r, n*in, 1)
			x := matNode(g, "x", xD, n, in)
			var ws []*G.Node
			var wD [][]float32
			total := 0
			for i, o := range outs {
				d := randn32(r, in*o, 1)
				wD = append(wD, d)
				ws = append(ws, matNode(g, fmt.Sprintf("w%d", i), d, in, o))
				total += o
			}
			y, err := LinearCat(x, ws...)
			if err != nil {
				t.Fatal(err)
			}
			R := randn32(r, n*total, 1)
			m := machine(t, weightedSum(t, y, R), append([]*G.Node{x}, ws...)...)
			run(t, m)
			x64, R64 := to64(xD), to64(R)
			w64 := make([][]float64, len(wD))
			for i := range wD {
				w64[i] = to64(wD[i])
			}
			ref := func() []float64 {
				y := make([]float64, 0, n*total)
				parts := make([][]float64, len(outs))
				for i, o := range outs {
					parts[i] = refLinear(x64, w64[i], nil, in, o, false)
				}
				for row := range n {
					for i, o := range outs {
						y = append(y, parts[i][row*o:row*o+o]...)
					}
				}
				return y
			}
			assertClose(t, "y", y.Value().Data().([]float32), ref(), 1e-5, 1e-5)
			loss := func() float64 { return dot64(R64, ref()) }
			assertClose(t, "dx", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)
			for i := range ws {
				assertClose(t, fmt.Sprintf("dw%d", i), gradOf(t, ws[i]), numGrad(loss, w64[i]), gradRtol, gradAtol)
			}
		})
	}
}

func TestLinearCatErrors(t *testing.T) {
	g := G.NewGraph()
	x := matNode(g, "x", make([]float32, 6), 2, 3)
	if _, err := LinearCat(x); !errors.Is(err, ErrShape) {
		t.Errorf("no weights: %v", err)
	}
	w := matNode(g, "w", make([]float32, 8), 4, 2)
	if _, err := LinearCat(x, w); !errors.Is(err, ErrShape) {
		t.Errorf("weight of 4 rows for 3 inputs: %v", err)
	}
	if _, err := SwiGLUPacked(matNode(g, "gu", make([]float32, 6), 2, 3)); !errors.Is(err, ErrShape) {
		t.Errorf("odd packed width: %v", err)
	}
}

// TestSwiGLUPackedOp checks SwiGLUPacked against SwiGLU of the float64
// halves, and its gradient against finite differences.
func TestSwiGLUPackedOp(t *testing.T) {
	for _, s := range oddShapes {
		n, I := s[0], s[1]
		t.Run(fmt.Sprintf("N%dI%d", n, I), func(t *testing.T) {
			r := newRand(uint64(n*37 + I))
			guD, R := randn32(r, 2*n*I, 2), randn32(r, n*I, 1)
			g := G.NewGraph()
			gu := matNode(g, "gu", guD, n, 2*I)
			y, err := SwiGLUPacked(gu)
			if err != nil {
				t.Fatal(err)
			}
			m := machine(t, weightedSum(t, y, R), gu)
			run(t, m)
			gu64, R64 := to64(guD), to64(R)
			ref := func() []float64 {
				gate, up := make([]float64, 0, n*I), make([]float64, 0, n*I)
				for row := range n {
					gate = append(gate, gu64[2*row*I:2*row*I+I]...)
					up = append(up, gu64[2*row*I+I:2*row*I+2*I]...)
				}
				return refSwiGLU(gate, up)
			}
			assertClose(t, "y", y.Value().Data().([]float32), ref(), 1e-5, 1e-6)
			loss := func() float64 { return dot64(R64, ref()) }
			assertClose(t, "dgu", gradOf(t, gu), numGrad(loss, gu64), gradRtol, gradAtol)
		})
	}
}
