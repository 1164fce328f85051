package model

import (
	"fmt"
	"hash"
	"runtime"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Gradient checkpointing (ReplicaOptions.GradCheckpointing). In the
// replica's graph each block is one op of the residual stream:
//
//	forward   blockOp(x, anchor): builds the block alone in a graph of its
//	          own (blockEnv.block, the very steps the whole graph adds),
//	          runs it forward and keeps only the block's output;
//	backward  blockGradOp(x, dy): builds the block's graph again with its
//	          gradients (G.Backpropagate from dy), runs it from the saved
//	          input x, adds the micro-batch weight × the block's parameter
//	          gradients into the replica's gradient buffer and returns dx.
//
// The ops' graphs are built afresh at every run and dropped after it: the
// fused ops own their output buffers, so a graph kept per block would keep
// every block's activations, which is what checkpointing avoids. Between the
// passes the replica holds each block's output (the next one's input); the
// internals of one block live only while its op runs.
//
// Both passes draw their dropout masks from the replica's source with the
// streams of the whole graph (blockEnv.stream), and run the same ops on the
// same values, so the loss and the gradients equal those of the graph
// without checkpointing bit for bit (TestGradCheckpointingEqual).
//
// A layer must therefore not keep nodes of a graph it was built into:
// through them it would keep that graph's buffers (lora records its base
// nodes through weak pointers for this reason).
//
// The blocks' parameters are not nodes of the replica's graph. A one-element
// anchor node is an input of every block op, so that G.Grad differentiates
// the block ops even when nothing before them trains (LoRA: the embeddings
// are frozen); its gradient, zero, is never read.

// checkpointer builds a replica's block ops and their graphs.
type checkpointer struct {
	r      *Replica
	env    *blockEnv
	rows   int
	width  int // DModel
	anchor *G.Node
	// trainsBlocks is whether some block has a trainable parameter.
	trainsBlocks bool
	// dx holds the blocks' input gradients: block i's in dx[i%2], since
	// block i's gradient op reads block i+1's dx and nothing reads it after.
	dx [2]nn.OutBuf
}

// newCheckpointer prepares the block ops of r, whose graph gc is being
// built. It builds every block's graph once, so that a layer that cannot
// be built fails here rather than in the first step.
func newCheckpointer(r *Replica, gc *GraphContext) (*checkpointer, error) {
	m := r.model
	env, err := m.newBlockEnv(r.Dropout, r.B, r.T)
	if err != nil {
		return nil, err
	}
	ck := &checkpointer{r: r, env: env, rows: r.B * r.T, width: m.Config.DModel}
	ck.anchor = G.NodeFromAny(gc.g, tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{0})), G.WithName("checkpoint.anchor"))
	for i := range m.Config.Layers {
		bg, err := ck.build(i)
		if err != nil {
			return nil, err
		}
		if len(bg.gc.wrt) > 0 {
			ck.trainsBlocks = true
		}
	}
	return ck, nil
}

// trains reports whether a block has a trainable parameter (false for nil).
func (ck *checkpointer) trains() bool { return ck != nil && ck.trainsBlocks }

// blockGraph is one block alone in a graph: x is its input (an unbound
// node), out its output, gc the binding of its parameters.
type blockGraph struct {
	g      *G.ExprGraph
	gc     *GraphContext
	x, out *G.Node
}

// build adds block i to a new graph.
func (ck *checkpointer) build(i int) (*blockGraph, error) {
	g := G.NewGraph()
	gc := &GraphContext{g: g, model: ck.r.model, rows: ck.rows, nodes: map[*Param]*G.Node{}, drop: ck.r.Dropout, precision: ck.r.precision}
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(ck.rows, ck.width), G.WithName("checkpoint.x"))
	out, err := ck.env.block(gc, i, x)
	if err != nil {
		return nil, err
	}
	return &blockGraph{g: g, gc: gc, x: x, out: out}, nil
}

// matrix wraps data as a rows×width tensor.
func (ck *checkpointer) matrix(data []float32) *tensor.Dense {
	return tensor.New(tensor.WithShape(ck.rows, ck.width), tensor.WithBacking(data))
}

// forward runs block i on x and writes its output into y.
func (ck *checkpointer) forward(i int, y, x []float32) error {
	bg, err := ck.build(i)
	if err != nil {
		return err
	}
	if err := G.Let(bg.x, ck.matrix(x)); err != nil {
		return fmt.Errorf("model: checkpointed block %d: %w", i, err)
	}
	vm := newBlockMachine(bg.g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		return fmt.Errorf("model: checkpointed block %d: %w", i, err)
	}
	out, err := nn.Float32s("model", "checkpointed block", "output", bg.out.Value(), len(y), nil)
	if err != nil {
		return err
	}
	copy(y, out)
	return nil
}

// backward runs block i forward from x and backward from dy, adds the
// replica's micro-batch weight × its parameter gradients into the replica's
// gradient buffer (unless the loss is not finite: ForwardBackward then
// fails and leaves the buffer as it was) and writes the input's gradient
// into dx, unless dx is nil.
func (ck *checkpointer) backward(i int, dx, x, dy []float32) error {
	bg, err := ck.build(i)
	if err != nil {
		return err
	}
	params := bg.gc.wrt
	if len(params) == 0 && dx == nil {
		return nil
	}
	wrt := make(G.Nodes, 0, len(params)+1)
	for _, p := range params {
		wrt = append(wrt, bg.gc.nodes[p])
	}
	if dx != nil {
		wrt = append(wrt, bg.x)
	}
	dyNode := G.NewMatrix(bg.g, tensor.Float32, G.WithShape(ck.rows, ck.width), G.WithName("checkpoint.dy"))
	fail := func(err error) error { return fmt.Errorf("model: checkpointed block %d: %w", i, err) }
	grads, err := G.Backpropagate(G.Nodes{bg.out}, G.Nodes{dyNode}, wrt)
	if err != nil {
		return fail(err)
	}
	if err := G.Let(bg.x, ck.matrix(x)); err != nil {
		return fail(err)
	}
	if err := G.Let(dyNode, ck.matrix(dy)); err != nil {
		return fail(err)
	}
	prog, err := nn.TrainingSubgraph(grads[:1], wrt)
	if err != nil {
		return fail(err)
	}
	vm := newBlockMachine(prog)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		return fail(err)
	}
	if dx != nil {
		g, err := nn.Float32s("model", "checkpointed block", "input gradient", grads[len(grads)-1].Value(), len(dx), nil)
		if err != nil {
			return err
		}
		copy(dx, g)
	}
	if !ck.lossFinite() {
		return nil
	}
	r := ck.r
	for j, p := range params {
		g, err := nn.Float32s("model", "checkpointed block", p.Name+" gradient", grads[j].Value(), p.Size(), nil)
		if err != nil {
			return err
		}
		kernels.Axpy(r.gradWeight, g, r.Grad[p.Offset:p.Offset+p.Size()])
	}
	return nil
}

// lossFinite reports whether the replica's loss, computed before any
// backward op runs, is finite.
func (ck *checkpointer) lossFinite() bool {
	v := ck.r.loss.Value()
	if v == nil {
		return false
	}
	l, ok := v.Data().(float32)
	return ok && l == l && l <= 3.4e38 && l >= -3.4e38
}

// collect frees the graph of the block pass that just ended. Its buffers
// are garbage once the pass returns, but the collector's pacing sizes the
// heap from the live heap at its last cycle: left to it, the garbage of
// many passes piles up, and at SmolLM2-135M's shapes the checkpointed
// step peaked at 15 GB against 6 GB without checkpointing
// (TestGradCheckpointingMemory). One collection per block pass keeps the
// peak at one block's internals; it marks little, since the big buffers
// (weights, optimizer state, activations) hold no pointers, and cost no
// measurable time in a CPU profile of a 12-block step.
func collect() { runtime.GC() }

// newBlockMachine compiles a block pass's graph. gorgonia sets a finalizer
// on every tape machine (it frees CUDA contexts; without the cuda tag it
// does nothing), and an object with a finalizer outlives the collection
// that finds it unreachable, by one cycle, together with all it reaches:
// here the pass's graph and every buffer of its ops. collect's one
// collection per pass then freed the graph of the pass before, not of the
// pass that just ended, so two passes' internals were live at once. At
// SmolLM2-135M's shapes, LoRA on all linear layers, B=4, T=256, the live
// heap after each backward pass's collection was 567 MB instead of 453
// (GODEBUG=gctrace=1) and the peak RSS of `galleon finetune -batch 4 -seq
// 256 -grad-checkpointing -base-dtype bf16` 753 MB instead of 629. The
// machine is closed when its pass ends, so the finalizer has nothing left
// to do and is dropped (TestBlockMachineFreedByOneCollection).
func newBlockMachine(g *G.ExprGraph) G.VM {
	vm := G.NewTapeMachine(g)
	runtime.SetFinalizer(vm, nil)
	return vm
}

// blockNode adds block i of the replica's graph as one checkpointed op of x.
func (ck *checkpointer) blockNode(gc *GraphContext, i int, x *G.Node) (*G.Node, error) {
	if s := x.Shape(); len(s) != 2 || s[0] != ck.rows || s[1] != ck.width {
		return nil, fmt.Errorf("model: checkpointed block %d: input of shape %v, want [%d, %d]", i, s, ck.rows, ck.width)
	}
	op := &blockOp{OpBase: nn.NewOpBase(), ck: ck, i: i}
	y, err := G.ApplyOp(op, x, ck.anchor)
	if err != nil {
		return nil, fmt.Errorf("model: checkpointed block %d: %w", i, err)
	}
	return y, nil
}

// blockOp is block i run forward, keeping only its output.
type blockOp struct {
	nn.OpBase
	ck  *checkpointer
	i   int
	out nn.OutBuf
}

var vectorType = G.TensorType{Dims: 1, Of: tensor.Float32}

func (op *blockOp) Arity() int { return 2 }
func (op *blockOp) Type() hm.Type {
	return hm.NewFnType(matrixType, vectorType, matrixType)
}
func (op *blockOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.ck.rows, op.ck.width}, nil
}
func (op *blockOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "model.CheckpointedBlock#%d(block=%d, %d×%d)", op.Serial(), op.i, op.ck.rows, op.ck.width)
}
func (op *blockOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *blockOp) String() string   { return fmt.Sprintf("model.CheckpointedBlock(%d)", op.i) }

// Do runs the block on its input.
func (op *blockOp) Do(in ...G.Value) (G.Value, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("model: checkpointed block %d: %d inputs, want 2", op.i, len(in))
	}
	ck := op.ck
	x, err := nn.Float32s("model", "checkpointed block", "input", in[0], ck.rows*ck.width, nil)
	if err != nil {
		return nil, err
	}
	v, err := op.out.Do(ck.rows, ck.width, func(y []float32) error { return ck.forward(op.i, y, x) })
	collect()
	return v, err
}

func (op *blockOp) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff builds the block's backward op and the anchor's zero gradient,
// which reads the former's output so that the tape runs it.
func (op *blockOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, fmt.Errorf("model: checkpointed block %d: %d inputs to differentiate, want 2", op.i, len(inputs))
	}
	dx, err := G.ApplyOp(&blockGradOp{OpBase: nn.NewOpBase(), fwd: op, target: inputs[0]}, inputs[0], grad)
	if err != nil {
		return nil, fmt.Errorf("model: checkpointed block %d: %w", op.i, err)
	}
	da, err := G.ApplyOp(&anchorGradOp{OpBase: nn.NewOpBase(), block: op.i}, dx)
	if err != nil {
		return nil, fmt.Errorf("model: checkpointed block %d: %w", op.i, err)
	}
	return G.Nodes{dx, da}, nil
}

// blockGradOp is block i's backward pass: dx from x and dy, the parameter
// gradients straight into the replica's buffer.
type blockGradOp struct {
	nn.OpBase
	fwd         *blockOp
	target      *G.Node // the block's input
	placeholder nn.OutBuf
}

func (op *blockGradOp) Arity() int { return 2 }
func (op *blockGradOp) Type() hm.Type {
	return hm.NewFnType(matrixType, matrixType, matrixType)
}
func (op *blockGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.fwd.ck.rows, op.fwd.ck.width}, nil
}
func (op *blockGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "model.CheckpointedBlockGrad#%d(fwd#%d)", op.Serial(), op.fwd.Serial())
}
func (op *blockGradOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *blockGradOp) String() string {
	return fmt.Sprintf("model.CheckpointedBlockGrad(%d)", op.fwd.i)
}

// Do recomputes the block and runs its backward pass. When the block's
// input needs no gradient (frozen embeddings before the first block) it
// computes only the parameter gradients and returns a 1×1 placeholder,
// which nothing reads.
func (op *blockGradOp) Do(in ...G.Value) (G.Value, error) {
	ck, i := op.fwd.ck, op.fwd.i
	if len(in) != 2 {
		return nil, fmt.Errorf("model: checkpointed block %d gradient: %d inputs, want 2", i, len(in))
	}
	n := ck.rows * ck.width
	x, err := nn.Float32s("model", "checkpointed block gradient", "input", in[0], n, nil)
	if err != nil {
		return nil, err
	}
	dy, err := nn.Float32s("model", "checkpointed block gradient", "output gradient", in[1], n, nil)
	if err != nil {
		return nil, err
	}
	if i == ck.r.model.Config.Layers-1 {
		// The first backward pass: what ran since the last forward
		// pass's collection (the head and the loss, whose chunk of
		// logits is dropped with checkpointing) is garbage that would
		// otherwise stay live through this pass.
		collect()
	}
	if op.target.Deriv() == nil {
		err := ck.backward(i, nil, x, dy)
		collect()
		if err != nil {
			return nil, err
		}
		return op.placeholder.Get(1, 1), nil
	}
	v, err := ck.dx[i%2].Do(ck.rows, ck.width, func(dx []float32) error { return ck.backward(i, dx, x, dy) })
	collect()
	return v, err
}

// anchorGradOp is the anchor's gradient through block i: zero.
type anchorGradOp struct {
	nn.OpBase
	block int
	out   nn.OutBuf
}

func (op *anchorGradOp) Arity() int                                     { return 1 }
func (op *anchorGradOp) Type() hm.Type                                  { return hm.NewFnType(matrixType, vectorType) }
func (op *anchorGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return tensor.Shape{1}, nil }
func (op *anchorGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "model.CheckpointAnchorGrad#%d(block=%d)", op.Serial(), op.block)
}
func (op *anchorGradOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *anchorGradOp) String() string   { return "model.CheckpointAnchorGrad" }

// Do returns a zero.
func (op *anchorGradOp) Do(...G.Value) (G.Value, error) {
	t := op.out.Get(1, -1)
	clear(t.Float32s())
	return t, nil
}
