package model

import (
	"fmt"

	"github.com/galleon-ml/galleon/attention"
	"github.com/galleon-ml/galleon/internal/gorgoniablas"
	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GraphContext is what a layer sees while a training graph is built: the
// graph, and the binding of parameters to nodes.
type GraphContext struct {
	g     *G.ExprGraph
	model *Model
	rows  int
	nodes map[*Param]*G.Node
	wrt   []*Param // trainable parameters bound so far, in binding order
	// precision is the number format of the linear layers' products.
	precision Precision
	drop      *nn.DropoutSource
	// tokens is set when the token embedding is held in bfloat16: the
	// graph's embedding output is then a leaf the replica fills.
	tokens *tokenLeaf
}

// Graph returns the gorgonia graph under construction.
func (gc *GraphContext) Graph() *G.ExprGraph { return gc.g }

// Rows returns the number of activation rows (batch × sequence length).
func (gc *GraphContext) Rows() int { return gc.rows }

// Node returns the node bound to p's storage, creating it on first use. All
// graphs of a model bind the same memory, so an optimizer step is seen by
// every replica without copies.
func (gc *GraphContext) Node(p *Param) *G.Node {
	if n, ok := gc.nodes[p]; ok {
		return n
	}
	v := tensor.New(tensor.WithShape(p.Shape...), tensor.WithBacking(p.Data))
	n := G.NodeFromAny(gc.g, v, G.WithName(p.Name))
	gc.nodes[p] = n
	if gc.model.trainable.Get(p.Name) == p {
		gc.wrt = append(gc.wrt, p)
	}
	return n
}

// Dropout returns the source of the graph's dropout masks. Layers that drop
// out (LoRA's adapter input) draw from it with a stream of their own, so
// their masks follow the step and the rows like the model's.
func (gc *GraphContext) Dropout() *nn.DropoutSource { return gc.drop }

// Trainable reports whether p is in the model's trainable set.
func (gc *GraphContext) Trainable(p *Param) bool { return gc.model.trainable.Get(p.Name) == p }

// Replica is one training graph of a model for a fixed batch shape, bound to
// the model's shared weights. It runs a micro-batch forward and backward and
// adds the gradients into Grad, a flat buffer laid out like the model's
// trainable set. Data-parallel workers each own one replica.
type Replica struct {
	model   *Model
	B, T    int // the micro-batch shape: B sequences of T tokens
	g       *G.ExprGraph
	vm      G.VM
	inputs  *nn.IDs
	targets *nn.IDs
	loss    *G.Node
	hidden  *G.Node // the head's input, [B·T, DModel]
	logits  *G.Node // nil when the head and loss are fused
	gradOf  []gradSlot
	// precision is the number format of the linear layers' products.
	precision Precision
	// Dropout seeds the graph's dropout masks (Config.Dropout > 0); the
	// trainer sets its Step before every micro-batch.
	Dropout  *nn.DropoutSource
	Grad     []float32
	trainSet *ParamSet
	// gradWeight is the running micro-batch's weight, for the gradients
	// that checkpointed blocks add into Grad during the run.
	gradWeight float32
	// logitsBuf holds the logits Logits computes when the graph fuses the
	// head with the loss.
	logitsBuf []float32
	// gradPass clears Grad and adds the micro-batches' gradients into it
	// on all cores (a 135M-weight model's Grad is 540 MB).
	gradPass gradPass
	// tokens is the embedding leaf of a model whose token embedding is
	// held in bfloat16, filled before every run; nil otherwise.
	tokens *tokenLeaf
}

type gradSlot struct {
	node *G.Node
	dst  []float32 // view into Replica.Grad
}

// ReplicaOptions are the choices a training graph is built with.
type ReplicaOptions struct {
	// GradCheckpointing makes each block one op that keeps only its input
	// between the forward and the backward pass and runs the block again
	// in the backward pass (recompute.go): the activations held are one
	// block's input per block plus one block's internals at a time, for
	// about one more forward pass of time. Loss and gradients are those
	// of the graph without it, bit for bit. The blocks' parameter
	// gradients are added into Grad while the pass runs, so an error other
	// than a non-finite loss may leave part of a micro-batch's gradients
	// there.
	GradCheckpointing bool
	// Precision is the number format of the linear layers' products
	// (see Precision); the zero value is float32.
	Precision Precision
}

// NewReplica builds the training graph for batches of B sequences of T
// tokens (T ≤ Config.SeqLen).
func (m *Model) NewReplica(B, T int) (*Replica, error) {
	return m.NewReplicaWith(B, T, ReplicaOptions{})
}

// NewReplicaWith is NewReplica with options.
func (m *Model) NewReplicaWith(B, T int, opts ReplicaOptions) (*Replica, error) {
	if B <= 0 || T <= 0 || T > m.Config.SeqLen {
		return nil, fmt.Errorf("model: replica batch %d×%d (sequence length must be in 1…%d)", B, T, m.Config.SeqLen)
	}
	if err := m.Config.checkActivations(B, T, m.Config.Attention == AttentionNaive); err != nil {
		return nil, fmt.Errorf("model: replica: %w", err)
	}
	var err error
	gorgoniablas.Install()
	r := &Replica{model: m, B: B, T: T, g: G.NewGraph(), trainSet: m.trainable}
	r.Dropout = &nn.DropoutSource{Seed: m.dropoutSeed}
	r.inputs = nn.NewIDs(B, T)
	r.targets = nn.NewIDs(B, T)
	if opts.Precision > PrecisionBF16 {
		return nil, fmt.Errorf("model: replica: unknown precision %v", opts.Precision)
	}
	r.precision = opts.Precision
	gc := &GraphContext{g: r.g, model: m, rows: B * T, nodes: map[*Param]*G.Node{}, drop: r.Dropout, precision: opts.Precision}
	var ck *checkpointer
	if opts.GradCheckpointing {
		if ck, err = newCheckpointer(r, gc); err != nil {
			return nil, err
		}
	}
	hidden, logits, loss, err := m.buildGraph(gc, r.inputs, r.targets, r.Dropout, B, T, ck)
	if err != nil {
		return nil, err
	}
	r.loss, r.hidden, r.logits, r.tokens = loss, hidden, logits, gc.tokens
	if len(gc.wrt) == 0 && !ck.trains() {
		return nil, fmt.Errorf("model: the graph uses no trainable parameter")
	}
	wrt := make([]*G.Node, len(gc.wrt), len(gc.wrt)+1)
	for i, p := range gc.wrt {
		wrt[i] = gc.nodes[p]
	}
	if ck != nil {
		// The blocks' parameters are not nodes of this graph: the anchor
		// puts every block op between a differentiated node and the loss.
		wrt = append(wrt, ck.anchor)
	}
	grads, err := G.Grad(loss, wrt...)
	if err != nil {
		return nil, fmt.Errorf("model: differentiate: %w", err)
	}
	r.Grad = make([]float32, m.trainable.Len())
	for i, p := range gc.wrt {
		r.gradOf = append(r.gradOf, gradSlot{node: grads[i], dst: r.Grad[p.Offset : p.Offset+p.Size()]})
	}
	// Compile only the loss, the head's input (or the logits) and the
	// trained gradients: G.Grad also builds backward nodes for frozen
	// weights, which would run.
	outputs := []*G.Node{loss, hidden}
	if logits != nil {
		outputs = append(outputs, logits)
	}
	prog, err := nn.TrainingSubgraph(outputs, wrt)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	r.vm = G.NewTapeMachine(prog)
	return r, nil
}

// buildGraph adds the whole model and its mean cross-entropy to gc's graph,
// interpreting the family's description (arch.go), and returns the head's
// input, the logits (nil when the head is fused with the loss: never
// B·T×Vocab logits) and the loss. GPT-2's residual and embedding dropout
// (resid_pdrop, embd_pdrop) follow Config.Dropout; attention-probability
// dropout is not applied. With ck set, each block is one checkpointed op
// (recompute.go) instead of its steps.
func (m *Model) buildGraph(gc *GraphContext, inputs, targets *nn.IDs, drop *nn.DropoutSource, B, T int, ck *checkpointer) (hidden, logits, loss *G.Node, err error) {
	c := m.Config
	a := c.arch()
	env, err := m.newBlockEnv(drop, B, T)
	if err != nil {
		return nil, nil, nil, err
	}
	x, err := m.embedGraph(gc, a, inputs)
	if err != nil {
		return nil, nil, nil, err
	}
	if x, err = nn.Dropout(x, c.Dropout, drop, embedStream); err != nil {
		return nil, nil, nil, err
	}
	for i := range c.Layers {
		if ck != nil {
			x, err = ck.blockNode(gc, i, x)
		} else {
			x, err = env.block(gc, i, x)
		}
		if err != nil {
			return nil, nil, nil, err
		}
	}
	if hidden, err = env.norm(gc, x, a.final); err != nil {
		return nil, nil, nil, err
	}
	// The head fused with the loss, chunk by chunk of rows: the tied
	// embedding or a dense lm_head without bias. A replaced head (LoRA,
	// fake-quant) is a layer of its own, followed by the loss.
	var head Linear
	if !c.TiedEmbeddings {
		if head, err = m.Linear(NameHead); err != nil {
			return nil, nil, nil, err
		}
	}
	// A head held in bfloat16 (KeepBF16) is frozen: the tied embedding,
	// or an lm_head BF16Linear ([V, D] as Llama stores it: transW).
	// With checkpointing the head's logits are dropped after its op runs:
	// the blocks' backward passes, which recompute each block, come after
	// it and would otherwise run beside them. A frozen head's chunks are
	// then smaller, so that they stay below a recomputed block.
	release, frozenChunk := ck != nil, nn.LinearCEFrozenChunk(c.Vocab)
	if release {
		frozenChunk = nn.LinearCECheckpointChunk(c.Vocab)
	}
	if c.TiedEmbeddings && m.tokensBF16 != nil {
		loss, err = nn.LinearCrossEntropyBF16(hidden, m.tokensBF16, targets, nn.LinearCEOpts{TransW: true, Chunk: frozenChunk, Release: release})
		return hidden, nil, loss, err
	}
	if b, ok := head.(*BF16Linear); ok && b.Bias == nil {
		loss, err = nn.LinearCrossEntropyBF16(hidden, b.Weight, targets, nn.LinearCEOpts{TransW: b.OutIn, Chunk: frozenChunk, Release: release})
		return hidden, nil, loss, err
	}
	if d, ok := head.(*DenseLinear); c.TiedEmbeddings || ok && d.Bias == nil {
		p, transW := m.Weights.Get(c.TokenEmbeddingName()), true
		if !c.TiedEmbeddings {
			p, transW = d.Weight, false
		}
		opts := nn.LinearCEOpts{TransW: transW, Release: release}
		if !gc.Trainable(p) {
			// No dW product: smaller chunks of logits cost little.
			opts.Chunk = frozenChunk
		}
		loss, err = nn.LinearCrossEntropy(hidden, gc.Node(p), targets, opts)
		return hidden, nil, loss, err
	}
	if logits, err = head.BuildGraph(gc, hidden); err != nil {
		return nil, nil, nil, err
	}
	loss, err = nn.CrossEntropy(logits, targets)
	return hidden, logits, loss, err
}

// embedStream is the dropout stream of the embedding's output; block i's
// k-th residual dropout draws from blockEnv.stream(i, k), after it.
const embedStream = 1

// blockEnv holds what every block of a training graph shares: the family's
// description, the attention options, the rotary tables and positions, and
// the dropout source. The whole graph and a checkpointed block's own graph
// (recompute.go) add a block through the same env.block, so both compute
// the same thing with the same dropout masks.
type blockEnv struct {
	m         *Model
	a         *arch
	mods      []blockModules
	attn      attention.OpOptions
	invFreq   []float32 // Llama family: RoPE's inverse frequencies
	positions *nn.IDs   // Llama family: each row's position
	drop      *nn.DropoutSource
	residuals int // residual steps per block
}

func (m *Model) newBlockEnv(drop *nn.DropoutSource, B, T int) (*blockEnv, error) {
	c := m.Config
	e := &blockEnv{m: m, a: c.arch(), mods: c.modules(), drop: drop}
	e.attn = attention.OpOptions{
		B: B, T: T, H: c.Heads, KVH: c.KVHeads, Causal: true, Window: c.SlidingWindow,
		Impl: attention.Flash,
	}
	if c.Attention == AttentionNaive {
		e.attn.Impl = attention.Naive
	}
	if c.FamilyName() == FamilyLlama {
		var err error
		if e.invFreq, err = c.ropeFreqs(); err != nil {
			return nil, err
		}
		e.positions = nn.SequencePositions(B, T, 0)
	}
	for _, s := range e.a.steps {
		if s.op == stepResidual {
			e.residuals++
		}
	}
	return e, nil
}

// stream returns the dropout stream of block i's k-th residual: the
// streams count up from the embedding's, block by block.
func (e *blockEnv) stream(i, k int) uint64 {
	return embedStream + 1 + uint64(i)*uint64(e.residuals) + uint64(k)
}

// norm adds the family's norm of x with module's parameters.
func (e *blockEnv) norm(gc *GraphContext, x *G.Node, module string) (*G.Node, error) {
	c := e.m.Config
	w := func(name string) *G.Node { return gc.Node(e.m.Weights.Get(name)) }
	if e.a.norm == layerNorm {
		return nn.LayerNorm(x, w(module+".weight"), w(module+".bias"), c.LayerNormEps)
	}
	return nn.RMSNorm(x, w(module+".weight"), c.LayerNormEps)
}

// block adds block i to gc's graph on the residual stream x and returns the
// stream after it.
func (e *blockEnv) block(gc *GraphContext, i int, x *G.Node) (*G.Node, error) {
	c := e.m.Config
	mods := e.mods[i]
	var regs [numRegs]*G.Node
	regs[rX] = x
	residual := 0
	rotate := false // a rotary step is waiting for its attention step
	// packed holds the [q | k | v] or [gate | up] rows of a fused group of
	// linears (fusedLinears), in place of the group's separate registers.
	var packed [numRegs]*G.Node
	for j := 0; j < len(e.a.steps); j++ {
		s := &e.a.steps[j]
		src := regs[s.src[0]]
		var out *G.Node
		var err error
		switch s.op {
		case stepNorm:
			out, err = e.norm(gc, src, mods[j])
		case stepLinear:
			if ws := e.fusedLinears(gc, mods, j); ws != nil {
				if packed[s.dst], err = nn.LinearCat(src, ws...); err != nil {
					return nil, fmt.Errorf("model: %s step %d: %w", mods[0], j, err)
				}
				j += len(ws) - 1
				continue
			}
			var l Linear
			if l, err = e.m.Linear(mods[j]); err == nil {
				out, err = l.BuildGraph(gc, src)
			}
		case stepAttention:
			switch {
			case packed[s.src[0]] != nil:
				src = packed[s.src[0]]
			case s.src[0] != rQKV: // separate q, k and v: one packed matrix for the fused op
				src, err = packColumns(src, regs[s.src[1]], regs[s.src[2]])
			}
			if err == nil {
				opts := e.attn
				if rotate {
					opts.Rope = &attention.Rope{Positions: e.positions, InvFreq: e.invFreq}
					rotate = false
				}
				out, err = attention.Op(src, opts)
			}
		case stepGELU:
			out, err = nn.GELU(src)
		case stepRoPE:
			// The attention step after it rotates the packed q and k
			// itself (attention.OpOptions.Rope): one rotation of the
			// packed rows instead of a node and a gradient node for each
			// of q and k.
			if s.src[0] != rQ || s.src[1] != rK {
				err = fmt.Errorf("rotary step on registers %d, %d, not the queries and keys", s.src[0], s.src[1])
			}
			rotate = true
		case stepSwiGLU:
			if gu := packed[s.src[0]]; gu != nil {
				out, err = nn.SwiGLUPacked(gu)
			} else {
				out, err = nn.SwiGLU(src, regs[s.src[1]])
			}
		case stepResidual:
			var h *G.Node
			if h, err = nn.Dropout(src, c.Dropout, e.drop, e.stream(i, residual)); err == nil {
				out, err = nn.Residual(regs[rX], h)
			}
			residual++
		}
		if err != nil {
			return nil, fmt.Errorf("model: %s step %d: %w", mods[0], j, err)
		}
		if s.op == stepResidual {
			regs[rX] = out
		} else if s.op != stepRoPE {
			regs[s.dst] = out
		}
	}
	return regs[rX], nil
}

// fusedLinears returns the weights of the group of linear steps that starts
// at step j when the group is computed as one nn.LinearCat, or nil. A group
// is the Llama family's q, k and v projections (read packed by the
// attention step) or its gate and up projections (read packed by the
// SwiGLU step): consecutive steps from one register into the registers that
// the consumer reads, in its order, all of them float32 DenseLinears
// without bias. Anything else (LoRA, quantized or bf16 layers, Qwen2's
// biases) keeps its separate layers. The group costs neither the copy that
// packs q, k and v nor the sums of its input's gradients.
func (e *blockEnv) fusedLinears(gc *GraphContext, mods []string, j int) []*G.Node {
	steps := e.a.steps
	var want []reg
	var consumer stepOp
	switch steps[j].dst {
	case rQ:
		want, consumer = []reg{rQ, rK, rV}, stepAttention
	case rGate:
		want, consumer = []reg{rGate, rUp}, stepSwiGLU
	default:
		return nil
	}
	if gc.precision != PrecisionFP32 || j+len(want) > len(steps) {
		return nil
	}
	// The first later step of the consumer's kind must read exactly the
	// group's registers, in order; no other kind of step reads them but
	// the rotary one, which the attention step applies (block).
	found := false
	for _, s := range steps[j+len(want):] {
		if s.op == consumer {
			found = s.src[0] == want[0] && s.src[1] == want[1] && (len(want) == 2 || s.src[2] == want[2])
			break
		}
	}
	if !found {
		return nil
	}
	ws := make([]*G.Node, len(want))
	for k, r := range want {
		s := &steps[j+k]
		if s.op != stepLinear || s.dst != r || s.src[0] != steps[j].src[0] {
			return nil
		}
		l, err := e.m.Linear(mods[j+k])
		if err != nil {
			return nil
		}
		d, ok := l.(*DenseLinear)
		if !ok || d.Bias != nil {
			return nil
		}
		ws[k] = gc.Node(d.Weight)
	}
	return ws
}

// embedGraph adds the token (and GPT-2's position) embedding.
func (m *Model) embedGraph(gc *GraphContext, a *arch, inputs *nn.IDs) (*G.Node, error) {
	if m.tokensBF16 != nil { // only without learned positions (tokensBF16OK)
		return gc.tokenLeaf(m.tokensBF16, m.Config.DModel), nil
	}
	if a.positions == "" {
		return nn.TokenEmbedding(gc.Node(m.Weights.Get(a.tokens+".weight")), inputs)
	}
	return nn.Embedding(gc.Node(m.Weights.Get(a.tokens+".weight")), gc.Node(m.Weights.Get(a.positions+".weight")), inputs)
}

// ForwardBackward runs one micro-batch (B·T input and target ids) and adds
// weight × its gradients into r.Grad; it returns the micro-batch's mean loss
// in nats. weight is the micro-batch's share of the step's samples (1 for a
// whole step, 1/k for k equal micro-batches). A NaN or infinite loss returns
// an error wrapping ErrNonFinite and leaves r.Grad unchanged.
func (r *Replica) ForwardBackward(inputs, targets []int32, weight float32) (float32, error) {
	if err := r.inputs.Set(inputs); err != nil {
		return 0, fmt.Errorf("model: inputs: %w", err)
	}
	if err := r.targets.Set(targets); err != nil {
		return 0, fmt.Errorf("model: targets: %w", err)
	}
	if r.tokens != nil {
		if err := r.tokens.fill(inputs); err != nil {
			return 0, fmt.Errorf("model: inputs: %w", err)
		}
	}
	defer r.vm.Reset()
	r.gradWeight = weight
	if err := r.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("model: forward/backward: %w", err)
	}
	loss := r.loss.Value().Data().(float32)
	if loss != loss || loss > 3.4e38 || loss < -3.4e38 {
		return loss, fmt.Errorf("model: loss is %v: %w", loss, ErrNonFinite)
	}
	for _, s := range r.gradOf {
		r.gradPass.run(s.dst, s.node.Value().Data().([]float32), weight)
	}
	return loss, nil
}

// gradPass is a pass over (part of) Replica.Grad on all cores: clearing it
// (src nil) or adding alpha·src, in items of gradPassItem elements. Each
// element's result is what one kernels.Axpy over the whole slice gives, so
// the split changes no bit. A Replica owns one, so steps allocate nothing.
type gradPass struct {
	dst, src []float32
	alpha    float32
}

// gradPassItem is the number of elements of one item: 256 KiB of dst.
const gradPassItem = 1 << 16

func (p *gradPass) run(dst, src []float32, alpha float32) {
	p.dst, p.src, p.alpha = dst, src, alpha
	kernels.For(0, (len(dst)+gradPassItem-1)/gradPassItem, p)
	p.dst, p.src = nil, nil
}

// Item clears or accumulates item i.
func (p *gradPass) Item(_, i int) {
	lo := i * gradPassItem
	hi := min(lo+gradPassItem, len(p.dst))
	if p.src == nil {
		clear(p.dst[lo:hi])
		return
	}
	kernels.Axpy(p.alpha, p.src[lo:hi], p.dst[lo:hi])
}

// Logits returns the logits of the last ForwardBackward, [B·T, Vocab], or
// nil before the first; the slice is reused by the next call. When the graph
// fuses the head with the loss, they are computed here from the head's
// input (the training step itself never holds them).
func (r *Replica) Logits() []float32 {
	if r.logits != nil {
		return r.logits.Value().Data().([]float32)
	}
	v := r.hidden.Value()
	if v == nil {
		return nil
	}
	rows := r.B * r.T
	r.logitsBuf = grow(&r.logitsBuf, rows*r.model.Config.Vocab)
	inf := Inference{m: r.model}
	if err := inf.head(r.logitsBuf, v.Data().([]float32), rows); err != nil {
		return nil // the head ran in the graph with the same weights and sizes
	}
	return r.logitsBuf
}

// ZeroGrad clears the accumulated gradients.
func (r *Replica) ZeroGrad() { r.gradPass.run(r.Grad, nil, 0) }

// Close releases the replica's machine.
func (r *Replica) Close() error { return r.vm.Close() }
