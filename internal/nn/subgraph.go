package nn

import (
	"fmt"

	G "gorgonia.org/gorgonia"
)

// TrainingSubgraph returns the part of the graph that computes outputs (the
// loss, and any other node to be read after a run) and the gradients that
// G.Grad built for wrt, for G.NewTapeMachine to compile instead of the whole
// graph. It leaves out the backward nodes that G.Grad created for inputs
// outside wrt (frozen weights, data), which would otherwise be compiled and
// run: this package's backward ops then skip their work but still cost an
// instruction each, and gorgonia's own ops (G.Mul and the like) compute
// their unused gradients in full. Call it after G.Grad.
func TrainingSubgraph(outputs, wrt []*G.Node) (*G.ExprGraph, error) {
	if len(outputs) == 0 {
		return nil, fmt.Errorf("nn: TrainingSubgraph: no outputs: %w", ErrShape)
	}
	roots := make(G.Nodes, 0, len(outputs)+len(wrt))
	for _, n := range outputs {
		if n == nil {
			return nil, fmt.Errorf("nn: TrainingSubgraph: nil output: %w", ErrShape)
		}
		roots = append(roots, n)
	}
	g := roots[0].Graph()
	for _, n := range wrt {
		if n == nil || n.Deriv() == nil {
			return nil, fmt.Errorf("nn: TrainingSubgraph: %v has no gradient: call G.Grad with it first: %w", n, ErrShape)
		}
		roots = append(roots, n.Deriv())
	}
	for _, n := range roots {
		if n.Graph() != g {
			return nil, fmt.Errorf("nn: TrainingSubgraph: %v is in another graph: %w", n, ErrShape)
		}
	}
	return g.ExactSubgraphRoots(roots...), nil
}
