package nn

import (
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
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

// TestUsePreallocDo: every op computes into a preallocated value exactly what
// Do computes, and rejects one of the wrong size.
func TestUsePreallocDo(t *testing.T) {
	n := buildNet(t, newNetData(smallNet, 9), nil)
	n.step(t)
	checked := 0
	for _, node := range n.g.AllNodes() {
		pd, ok := node.Op().(G.UsePreallocDoer)
		if !ok {
			continue
		}
		switch node.Op().(type) {
		case *embeddingOp, *layerNormOp, *geluOp, *linearOp, *biasAddOp, *gradOp:
		default:
			continue
		}
		var in []G.Value
		for it := n.g.From(node.ID()); it.Next(); {
			in = append(in, it.Node().(*G.Node).Value())
		}
		want, err := node.Op().Do(in...)
		if err != nil {
			t.Fatal(err)
		}
		s := node.Shape()
		pre := tensor.New(tensor.WithShape(s...), tensor.Of(tensor.Float32))
		got, err := pd.UsePreallocDo(pre, in...)
		if err != nil {
			t.Fatalf("%v: %v", node.Op(), err)
		}
		if got != pre {
			t.Errorf("%v: UsePreallocDo did not return the preallocated value", node.Op())
		}
		if !slices.Equal(pre.Data().([]float32), want.Data().([]float32)) {
			t.Errorf("%v: UsePreallocDo and Do differ", node.Op())
		}
		bad := tensor.New(tensor.WithShape(s.TotalSize()+1), tensor.Of(tensor.Float32))
		if _, err := pd.UsePreallocDo(bad, in...); err == nil {
			t.Errorf("%v: UsePreallocDo accepted a value of the wrong size", node.Op())
		}
		checked++
	}
	if checked < 15 {
		t.Fatalf("checked %d ops", checked)
	}
}
