//go:build unix

package lora

import (
	"fmt"
	"hash"
	"math/rand/v2"
	"testing"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/cputime"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BenchmarkAdapterProducts runs one adapted layer's adapter path (dropout,
// down- and up-projection, and their gradients for x, A and B) forward and
// backward at a SmolLM2-135M projection's shape for B=4, T=256 (1,024 rows,
// 576 wide, rank 8), with and without dropout, reporting CPU time per run
// (the machine is shared, so wall-clock time mostly measures the others):
//
//	go test ./lora -run '^$' -bench AdapterProducts -cpu 1
func BenchmarkAdapterProducts(b *testing.B) {
	const rows, in, out, r = 1024, 576, 576, 8
	for _, p := range []float64{0, 0.1} {
		name := "dropout=0"
		if p > 0 {
			name = "dropout=0.1"
		}
		b.Run(name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			fill := func(n int) []float32 {
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(rng.NormFloat64())
				}
				return v
			}
			g := G.NewGraph()
			node := func(name string, v []float32, shape ...int) *G.Node {
				return G.NodeFromAny(g, tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v)), G.WithName(name))
			}
			xn, bn := node("x", fill(rows*in), rows, in), node("base", fill(rows*out), rows, out)
			an, bm, rn := node("A", fill(r*in), r, in), node("B", fill(out*r), out, r), node("R", fill(rows*out), rows, out)
			src := &nn.DropoutSource{Seed: 1}
			h, err := newDown(xn, an, p, src, 7)
			if err != nil {
				b.Fatal(err)
			}
			y, err := newUpAdd(bn, h, bm, 2, false)
			if err != nil {
				b.Fatal(err)
			}
			cost, err := G.ApplyOp(sinkOp{}, y, rn)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := G.Grad(cost, xn, an, bm); err != nil {
				b.Fatal(err)
			}
			vm := G.NewTapeMachine(g)
			defer vm.Close()
			run := func() {
				src.Step++
				if err := vm.RunAll(); err != nil {
					b.Fatal(err)
				}
				vm.Reset()
			}
			run()
			b.ResetTimer()
			c0 := int64(cputime.Process())
			for b.Loop() {
				run()
			}
			b.ReportMetric(float64(int64(cputime.Process())-c0)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}

// sinkOp is a cost whose gradient for its first input is its second
// input as is: it feeds the adapter path a fixed dy without the elementwise
// work of a real loss, which would outweigh the path itself.
type sinkOp struct{ nn.OpDefaults }

func (sinkOp) Arity() int { return 2 }
func (sinkOp) Type() hm.Type {
	return hm.NewFnType(matrixType, matrixType, G.Float32)
}
func (sinkOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return tensor.ScalarShape(), nil }
func (sinkOp) Do(...G.Value) (G.Value, error)                 { return G.NewF32(0), nil }
func (sinkOp) WriteHash(h hash.Hash)                          { fmt.Fprint(h, "sink") }
func (sinkOp) Hashcode() uint32                               { return 1 }
func (sinkOp) String() string                                 { return "sink" }
func (sinkOp) DiffWRT(int) []bool                             { return []bool{true, false} }
func (sinkOp) SymDiff(in G.Nodes, _, _ *G.Node) (G.Nodes, error) {
	return G.Nodes{in[1], nil}, nil
}
