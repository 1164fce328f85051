package model

import (
	"fmt"
	"strings"
)

// This file describes each family's architecture once: the model-level
// modules (embeddings, final norm, head) and the steps of one block. The
// parameter list (paramSpecs, ParamCount, LinearNames), the training graph
// (buildGraph) and the inference runner (Inference.Forward) all interpret
// this description, so adding a family means adding an arch value.

// reg names an activation of a block, [rows, width]: the description's
// steps read and write registers, and the interpreters hold one node or
// buffer per register.
type reg uint8

const (
	rX    reg = iota // the residual stream, [rows, DModel]
	rH               // a normalized stream or a projection back into it, [rows, DModel]
	rQKV             // fused q|k|v (GPT-2's c_attn), [rows, QKVWidth]
	rQ               // queries, [rows, Heads·HeadDim]
	rK               // keys, [rows, KVHeads·HeadDim]
	rV               // values, [rows, KVHeads·HeadDim]
	rAtt             // attention output, [rows, Heads·HeadDim]
	rMLP             // the MLP's hidden layer, [rows, MLPWidth]
	rGate            // SwiGLU's gate, [rows, MLPWidth]
	rUp              // SwiGLU's up projection, [rows, MLPWidth]
	numRegs
)

// width returns a register's width for c, as an int64 so that unvalidated
// configs cannot overflow (the callers check the products).
func (c Config) regWidth(r reg) int64 {
	hd := int64(c.HeadDim())
	switch r {
	case rX, rH:
		return int64(c.DModel)
	case rQKV:
		return (int64(c.Heads) + 2*int64(c.KVHeads)) * hd
	case rQ, rAtt:
		return int64(c.Heads) * hd
	case rK, rV:
		return int64(c.KVHeads) * hd
	case rMLP, rGate, rUp:
		return int64(c.MLPWidth())
	}
	panic(fmt.Sprintf("model: register %d", r))
}

// stepOp is what one step of a block does.
type stepOp uint8

const (
	stepNorm      stepOp = iota // dst = the family's norm of src, with the module's parameters
	stepLinear                  // dst = the linear module applied to src
	stepRoPE                    // rotate the queries src and keys src2 in place by their positions
	stepAttention               // dst = causal attention over src (packed q|k|v) or src, src2, src3 (q, k, v)
	stepGELU                    // dst = gelu(src)
	stepSwiGLU                  // dst = silu(src)·src2
	stepResidual                // rX += src (after residual dropout while training)
)

// biasOf says which Config field decides whether a linear has a bias.
type biasOf uint8

const (
	biasAlways  biasOf = iota // GPT-2's linears
	biasAttn                  // Config.AttnBias (q, k, v)
	biasAttnOut               // Config.AttnOutBias (o_proj)
	biasMLP                   // Config.MLPBias (gate, up, down)
)

// has reports whether a linear of this kind has a bias under c.
func (b biasOf) has(c Config) bool {
	switch b {
	case biasAttn:
		return c.AttnBias
	case biasAttnOut:
		return c.AttnOutBias
	case biasMLP:
		return c.MLPBias
	}
	return true
}

// step is one step of a block.
type step struct {
	op        stepOp
	module    string // norm and linear steps: the module's name inside the block
	dst       reg
	src       [3]reg // inputs; how many the op reads depends on op
	bias      biasOf // linear steps: which field decides the bias
	residProj bool   // linear steps: projects into the residual stream (GPT-2 scales its init)
}

// normKind is the family's normalization.
type normKind uint8

const (
	layerNorm normKind = iota // weight and bias, LayerNormEps added to the variance
	rmsNorm                   // weight only, LayerNormEps added to the mean square
)

// arch describes one family.
type arch struct {
	norm      normKind
	tokens    string // the token embedding module ([Vocab, DModel])
	positions string // the learned position embedding module ([SeqLen, DModel]); "" when rotary
	block     string // block prefix, with %d for the block index
	final     string // the final norm module
	steps     []step // one block
}

var gpt2Arch = arch{
	norm: layerNorm, tokens: NameWTE, positions: NameWPE, block: "transformer.h.%d", final: NameLNF,
	steps: []step{
		{op: stepNorm, module: "ln_1", dst: rH, src: [3]reg{rX}},
		{op: stepLinear, module: "attn.c_attn", dst: rQKV, src: [3]reg{rH}},
		{op: stepAttention, dst: rAtt, src: [3]reg{rQKV}},
		{op: stepLinear, module: "attn.c_proj", dst: rH, src: [3]reg{rAtt}, residProj: true},
		{op: stepResidual, src: [3]reg{rH}},
		{op: stepNorm, module: "ln_2", dst: rH, src: [3]reg{rX}},
		{op: stepLinear, module: "mlp.c_fc", dst: rMLP, src: [3]reg{rH}},
		{op: stepGELU, dst: rMLP, src: [3]reg{rMLP}},
		{op: stepLinear, module: "mlp.c_proj", dst: rH, src: [3]reg{rMLP}, residProj: true},
		{op: stepResidual, src: [3]reg{rH}},
	},
}

// Module names of the Llama family, as Hugging Face names them.
const (
	NameEmbedTokens = "model.embed_tokens"
	NameFinalNorm   = "model.norm"
)

var llamaArch = arch{
	norm: rmsNorm, tokens: NameEmbedTokens, block: "model.layers.%d", final: NameFinalNorm,
	steps: []step{
		{op: stepNorm, module: "input_layernorm", dst: rH, src: [3]reg{rX}},
		{op: stepLinear, module: "self_attn.q_proj", dst: rQ, src: [3]reg{rH}, bias: biasAttn},
		{op: stepLinear, module: "self_attn.k_proj", dst: rK, src: [3]reg{rH}, bias: biasAttn},
		{op: stepLinear, module: "self_attn.v_proj", dst: rV, src: [3]reg{rH}, bias: biasAttn},
		{op: stepRoPE, src: [3]reg{rQ, rK}},
		{op: stepAttention, dst: rAtt, src: [3]reg{rQ, rK, rV}},
		{op: stepLinear, module: "self_attn.o_proj", dst: rH, src: [3]reg{rAtt}, bias: biasAttnOut, residProj: true},
		{op: stepResidual, src: [3]reg{rH}},
		{op: stepNorm, module: "post_attention_layernorm", dst: rH, src: [3]reg{rX}},
		{op: stepLinear, module: "mlp.gate_proj", dst: rGate, src: [3]reg{rH}, bias: biasMLP},
		{op: stepLinear, module: "mlp.up_proj", dst: rUp, src: [3]reg{rH}, bias: biasMLP},
		{op: stepSwiGLU, dst: rMLP, src: [3]reg{rGate, rUp}},
		{op: stepLinear, module: "mlp.down_proj", dst: rH, src: [3]reg{rMLP}, bias: biasMLP, residProj: true},
		{op: stepResidual, src: [3]reg{rH}},
	},
}

// arch returns c's family description (GPT-2 for an unknown family, which
// Validate refuses).
func (c Config) arch() *arch {
	if c.FamilyName() == FamilyLlama {
		return &llamaArch
	}
	return &gpt2Arch
}

// blockPrefix returns the module prefix of block i.
func (a *arch) blockPrefix(i int) string { return fmt.Sprintf(a.block, i) }

// BlockName returns the module prefix of GPT-2 transformer block i.
func BlockName(i int) string { return gpt2Arch.blockPrefix(i) }

// BlockPrefix returns the module prefix of block i of c's family
// ("transformer.h.i" or "model.layers.i").
func (c Config) BlockPrefix(i int) string { return c.arch().blockPrefix(i) }

// TokenEmbeddingName returns the token embedding's parameter name
// ("transformer.wte.weight" or "model.embed_tokens.weight"), [Vocab, DModel];
// it is also the output head when TiedEmbeddings is set.
func (c Config) TokenEmbeddingName() string { return c.arch().tokens + ".weight" }

// EmbeddingNames lists the embedding tables' parameter names: the token
// embedding, and GPT-2's learned positions.
func (c Config) EmbeddingNames() []string {
	a := c.arch()
	if a.positions == "" {
		return []string{a.tokens + ".weight"}
	}
	return []string{a.tokens + ".weight", a.positions + ".weight"}
}

// linearShape returns the [in, out] shape of a linear step.
func (c Config) linearShape(s *step) (in, out int64) {
	return c.regWidth(s.src[0]), c.regWidth(s.dst)
}

// eachParamShape calls fn for every parameter tensor kind in order: the
// model's own tensors with block false, then each block tensor once with
// block true, named inside the block, then the tensors after the blocks. It stops at
// the first error fn returns.
func (c Config) eachParamShape(fn func(name string, block bool, dims []int64) error) error {
	a := c.arch()
	V, C := int64(c.Vocab), int64(c.DModel)
	if err := fn(a.tokens+".weight", false, []int64{V, C}); err != nil {
		return err
	}
	if a.positions != "" {
		if err := fn(a.positions+".weight", false, []int64{int64(c.SeqLen), C}); err != nil {
			return err
		}
	}
	norm := func(name string, block bool) error {
		if err := fn(name+".weight", block, []int64{C}); err != nil || a.norm == rmsNorm {
			return err
		}
		return fn(name+".bias", block, []int64{C})
	}
	for i := range a.steps {
		s := &a.steps[i]
		var err error
		switch s.op {
		case stepNorm:
			err = norm(s.module, true)
		case stepLinear:
			in, out := c.linearShape(s)
			if err = fn(s.module+".weight", true, []int64{in, out}); err == nil && s.bias.has(c) {
				err = fn(s.module+".bias", true, []int64{out})
			}
		}
		if err != nil {
			return err
		}
	}
	if err := norm(a.final, false); err != nil {
		return err
	}
	if !c.TiedEmbeddings {
		return fn(NameHead+".weight", false, []int64{C, V})
	}
	return nil
}

// paramSpecs lists the model's parameters with the family's Hugging Face
// names, linear weights [in, out]. Weight decay follows GPT-2 practice and
// the PyTorch anchor: matrices of linear layers decay; biases, norms and
// embeddings do not.
func (c Config) paramSpecs() []ParamSpec {
	a := c.arch()
	var global, block []ParamSpec
	_ = c.eachParamShape(func(name string, inBlock bool, dims []int64) error {
		shape := make([]int, len(dims))
		for i, d := range dims {
			shape[i] = int(d)
		}
		decay := len(shape) == 2 && strings.HasSuffix(name, ".weight") && !c.isEmbedding(name)
		if !inBlock {
			global = append(global, ParamSpec{Name: name, Shape: shape, Decay: decay})
		} else {
			block = append(block, ParamSpec{Name: name, Shape: shape, Decay: decay})
		}
		return nil
	})
	// Global tensors before the blocks (embeddings) and after (final
	// norm, head), blocks in order: the order of checkpoints.
	nEmb := len(c.EmbeddingNames())
	specs := append([]ParamSpec(nil), global[:nEmb]...)
	for i := 0; i < c.Layers; i++ {
		prefix := a.blockPrefix(i) + "."
		for _, s := range block {
			specs = append(specs, ParamSpec{Name: prefix + s.Name, Shape: s.Shape, Decay: s.Decay})
		}
	}
	return append(specs, global[nEmb:]...)
}

// isEmbedding reports whether name is one of c's embedding tables.
func (c Config) isEmbedding(name string) bool {
	for _, e := range c.EmbeddingNames() {
		if name == e {
			return true
		}
	}
	return false
}

// LinearNames lists the model's linear modules (weight [in, out] plus an
// optional bias), in graph order: per block GPT-2's c_attn, c_proj, c_fc,
// c_proj, or Llama's q, k, v, o, gate, up and down projections. The tied
// output head is not a separate module; an untied one is NameHead.
func (c Config) LinearNames() []string {
	a := c.arch()
	var names []string
	for i := 0; i < c.Layers; i++ {
		prefix := a.blockPrefix(i) + "."
		for _, s := range a.steps {
			if s.op == stepLinear {
				names = append(names, prefix+s.module)
			}
		}
	}
	if !c.TiedEmbeddings {
		names = append(names, NameHead)
	}
	return names
}

// blockModules holds the full names of one block's modules, step by step
// ("" for steps without a module), resolved once so that a forward pass
// builds no strings.
type blockModules []string

// modules returns the module names of every block of c.
func (c Config) modules() []blockModules {
	a := c.arch()
	out := make([]blockModules, c.Layers)
	for i := range out {
		prefix := a.blockPrefix(i) + "."
		out[i] = make(blockModules, len(a.steps))
		for j, s := range a.steps {
			if s.module != "" {
				out[i][j] = prefix + s.module
			}
		}
	}
	return out
}

// LinearHasBias reports whether the linear module called name (one of
// LinearNames) has a bias parameter under c.
func (c Config) LinearHasBias(name string) bool {
	a := c.arch()
	for _, s := range a.steps {
		if s.op == stepLinear && strings.HasSuffix(name, "."+s.module) && strings.HasPrefix(name, strings.SplitN(a.block, "%", 2)[0]) {
			return s.bias.has(c)
		}
	}
	return false // the head, or not a linear of c
}
