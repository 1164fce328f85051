package nn

import (
	"testing"

	G "gorgonia.org/gorgonia"
)

// TestOpsDoNotAllocate runs every op of the network, forward and backward,
// on the values of a previous run: after the first run, none allocates.
func TestOpsDoNotAllocate(t *testing.T) {
	n := buildNet(t, newNetData(smallNet, 6), nil)
	n.step(t)
	ops := 0
	for _, node := range n.g.AllNodes() {
		op := node.Op()
		switch op.(type) {
		case *embeddingOp, *layerNormOp, *geluOp, *linearOp, *biasAddOp, *crossEntropyOp, *gradOp:
		default:
			continue
		}
		var in []G.Value
		for it := n.g.From(node.ID()); it.Next(); {
			in = append(in, it.Node().(*G.Node).Value())
		}
		ops++
		if a := testing.AllocsPerRun(5, func() {
			if _, err := op.Do(in...); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("%v: %v allocations per Do", op, a)
		}
	}
	if ops < 15 {
		t.Fatalf("checked %d ops, expected the network's 16", ops)
	}
}

// TestAllocationsPerStep reports what a whole forward+backward step of the
// small network allocates; all of it is the TapeMachine's own bookkeeping.
func TestAllocationsPerStep(t *testing.T) {
	n := buildNet(t, newNetData(smallNet, 7), nil)
	n.step(t)
	instr := len(n.g.AllNodes())
	allocs := testing.AllocsPerRun(20, func() { n.step(t) })
	t.Logf("%v allocations per step for %d graph nodes", allocs, instr)
}
