package attention

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestOpRope checks Op with OpOptions.Rope against the same attention
// after two separate rotations (nn.RoPE on the q and k heads of the packed
// input): same output, same gradient of the unrotated input, for both
// implementations, with GQA and positions that start past 0 (as after a
// prompt).
func TestOpRope(t *testing.T) {
	const B, T, H, KVH, D = 2, 5, 4, 2, 6
	width := (H + 2*KVH) * D
	rng := rand.New(rand.NewPCG(71, 1))
	x0 := randData(rng, B*T*width)
	w := randData(rng, B*T*H*D)
	pos := nn.SequencePositions(B, T, 3)
	inv, err := nn.RopeFreqs(D, 1e4, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, impl := range []Impl{Flash, Naive} {
		t.Run(impl.String(), func(t *testing.T) {
			run := func(fused bool) (out, grad []float32) {
				g := G.NewGraph()
				x := G.NewMatrix(g, tensor.Float32, G.WithShape(B*T, width), G.WithName("qkv"),
					G.WithValue(tensor.New(tensor.WithShape(B*T, width), tensor.WithBacking(append([]float32(nil), x0...)))))
				opts := OpOptions{B: B, T: T, H: H, KVH: KVH, Causal: true, Impl: impl, BlockQ: 2, BlockK: 3}
				in := x
				if fused {
					opts.Rope = &Rope{Positions: pos, InvFreq: inv}
				} else if in, err = nn.RoPE(x, pos, inv, H+KVH, D); err != nil {
					t.Fatal(err)
				}
				y, err := Op(in, opts)
				if err != nil {
					t.Fatal(err)
				}
				wn := G.NewMatrix(g, tensor.Float32, G.WithShape(B*T, H*D), G.WithName("w"),
					G.WithValue(tensor.New(tensor.WithShape(B*T, H*D), tensor.WithBacking(w))))
				prod, err := G.HadamardProd(y, wn)
				if err != nil {
					t.Fatal(err)
				}
				cost, err := G.Sum(prod)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := G.Grad(cost, x); err != nil {
					t.Fatal(err)
				}
				m := G.NewTapeMachine(g, G.BindDualValues(x))
				defer m.Close()
				if err := m.RunAll(); err != nil {
					t.Fatal(err)
				}
				gv, err := x.Grad()
				if err != nil {
					t.Fatal(err)
				}
				return append([]float32(nil), y.Value().Data().([]float32)...), append([]float32(nil), gv.Data().([]float32)...)
			}
			wantOut, wantGrad := run(false)
			gotOut, gotGrad := run(true)
			for name, p := range map[string][2][]float32{"out": {gotOut, wantOut}, "dqkv": {gotGrad, wantGrad}} {
				for i := range p[0] {
					if d := math.Abs(float64(p[0][i] - p[1][i])); d > 1e-5*(1+math.Abs(float64(p[1][i]))) {
						t.Fatalf("%s[%d] = %g fused, %g with nn.RoPE nodes", name, i, p[0][i], p[1][i])
					}
				}
			}
		})
	}
}

func TestOpRopeErrors(t *testing.T) {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(8, 3*16), G.WithName("x"))
	inv := make([]float32, 8)
	for name, r := range map[string]*Rope{
		"no positions":    {InvFreq: inv},
		"positions count": {Positions: nn.SequencePositions(1, 4, 0), InvFreq: inv},
		"frequencies":     {Positions: nn.SequencePositions(2, 4, 0), InvFreq: inv[:7]},
	} {
		if _, err := Op(x, OpOptions{B: 2, T: 4, H: 1, Rope: r}); !errors.Is(err, ErrOption) {
			t.Errorf("%s: %v, want ErrOption", name, err)
		}
	}
	q := G.NewTensor(g, tensor.Float32, 4, G.WithShape(1, 2, 4, 16), G.WithName("q"))
	if _, err := OpQKV(q, q, q, OpOptions{Rope: &Rope{Positions: nn.SequencePositions(1, 4, 0), InvFreq: inv}}); !errors.Is(err, ErrOption) {
		t.Errorf("OpQKV with rope: %v", err)
	}
}
