package model

import (
	"runtime"
	"testing"
	"weak"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// blockPassBuffer is the buffer of a graph run and dropped as a
// checkpointed block pass runs and drops its graph.
type blockPassBuffer struct{ data [1 << 14]float32 }

// runBlockPass builds a graph over a fresh buffer, runs it on a block
// machine, closes the machine and returns a weak pointer to the buffer: the
// graph, the machine and the buffer are unreachable once it returns.
func runBlockPass(t *testing.T) weak.Pointer[blockPassBuffer] {
	t.Helper()
	buf := new(blockPassBuffer)
	g := G.NewGraph()
	x := G.NodeFromAny(g, tensor.New(tensor.WithShape(len(buf.data)), tensor.WithBacking(buf.data[:])), G.WithName("x"))
	G.Must(G.Neg(x))
	vm := newBlockMachine(g)
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	return weak.Make(buf)
}

// TestBlockMachineFreedByOneCollection: once a block pass has closed its
// machine, one collection frees the pass's graph and buffers, as collect
// assumes. A tape machine as gorgonia returns it carries a finalizer,
// which keeps everything it reaches through the first collection.
func TestBlockMachineFreedByOneCollection(t *testing.T) {
	p := runBlockPass(t)
	runtime.GC()
	if p.Value() != nil {
		t.Fatal("a block pass's buffer survived one collection after its machine was closed")
	}
}
