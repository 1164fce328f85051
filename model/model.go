// Package model is galleon's transformers, GPT-2 and the Llama family
// (llama, mistral, qwen2): configuration and presets, weights with Hugging
// Face names, one description of each family's block (arch.go) that both
// the training graph (gorgonia with fused custom ops) and the inference path
// with a KV cache interpret, AdamW, the data pipeline over the Go corpus,
// checkpoints, and generation.
//
// A training step reads top to bottom in Trainer.Step: a micro-batch runs
// forward and backward on a Replica (one gorgonia graph bound to the shared
// weights), the gradients accumulate in one flat buffer, and AdamW updates
// the flat weights. The parallel, lora and quant packages drive the same
// pieces: Replica for gradients, AdamW.StepRange for sharded updates, and
// Model.SetLinear to swap a linear layer for an adapted or quantized one.
package model

import (
	"fmt"
	"sort"
)

// Model is a transformer: its configuration, its weights and its linear layers.
type Model struct {
	Config  Config    // the architecture
	Weights *ParamSet // the float32 parameters, with the family's Hugging Face names

	// trainable is the set whose gradients replicas compute: Weights for
	// pre-training, an adapter set for LoRA (the base is then frozen).
	trainable *ParamSet
	// extra holds parameter sets added by replaced layers (adapters,
	// quantization scales) so graphs can bind them.
	extra   []*ParamSet
	linears map[string]Linear

	dropoutSeed uint64 // derived from the initialization seed

	// tokensBF16 is the token embedding [Vocab, DModel] held in bfloat16
	// (KeepBF16), frozen, when Weights lacks it; nil otherwise.
	tokensBF16 []uint16

	// hf is set by LoadPretrained: the Hugging Face dtype and config keys
	// that SavePretrained writes back (nil: float32, no extra keys).
	hf *hfInfo
}

// New returns a model of cfg's family with weights drawn from seed (see
// initWeights: Hugging Face's initialization for the family).
func New(cfg Config, seed uint64) (*Model, error) {
	m, err := NewZeroed(cfg)
	if err != nil {
		return nil, err
	}
	initWeights(m.Weights, cfg, seed)
	m.dropoutSeed = seed
	return m, nil
}

// NewZeroed returns a model of cfg with every weight zero, for loaders that
// fill the weights from files (Weights.Get(name).Data).
func NewZeroed(cfg Config) (*Model, error) { return newUninitialized(cfg) }

func newUninitialized(cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ps, err := NewParamSet(cfg.paramSpecs())
	if err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, Weights: ps, trainable: ps, linears: map[string]Linear{}}
	for _, name := range cfg.LinearNames() {
		m.linears[name] = &DenseLinear{Weight: ps.Get(name + ".weight"), Bias: ps.Get(name + ".bias")}
	}
	return m, nil
}

// NumParams returns the number of weights of the base model.
func (m *Model) NumParams() int { return m.Weights.Len() }

// Linear returns the linear layer called name (see Config.LinearNames).
func (m *Model) Linear(name string) (Linear, error) {
	l, ok := m.linears[name]
	if !ok {
		return nil, fmt.Errorf("model: no linear layer %q (have %v)", name, m.LinearNames())
	}
	return l, nil
}

// LinearNames lists the model's linear layers in graph order.
func (m *Model) LinearNames() []string { return m.Config.LinearNames() }

// SetLinear replaces the linear layer called name; the replacement must keep
// its input and output widths. Graphs built before the call keep the old
// layer: build new replicas afterwards.
func (m *Model) SetLinear(name string, l Linear) error {
	old, err := m.Linear(name)
	if err != nil {
		return err
	}
	oi, oo := old.Dims()
	ni, no := l.Dims()
	if oi != ni || oo != no {
		return fmt.Errorf("model: layer %q is %d→%d, replacement is %d→%d", name, oi, oo, ni, no)
	}
	if err := checkLinearParams(name, l); err != nil {
		return err
	}
	m.linears[name] = l
	return nil
}

// Trainable returns the parameter set whose gradients training computes.
func (m *Model) Trainable() *ParamSet { return m.trainable }

// SetTrainable makes ps the trained set and freezes every other parameter:
// graphs then spend no work on gradients of frozen weights. ps must be the
// model's Weights or a set registered with AddParams.
func (m *Model) SetTrainable(ps *ParamSet) error {
	if ps != m.Weights && !m.hasExtra(ps) {
		return fmt.Errorf("model: trainable set is neither the weights nor a registered set")
	}
	m.trainable = ps
	return nil
}

// AddParams registers a parameter set owned by a replaced layer so that
// graphs can bind its tensors. Names must not collide with other sets.
func (m *Model) AddParams(ps *ParamSet) error {
	if m.hasExtra(ps) {
		return nil
	}
	for _, name := range ps.Names() {
		if _, set := m.lookup(name); set != nil {
			return fmt.Errorf("model: parameter %q already exists", name)
		}
	}
	m.extra = append(m.extra, ps)
	return nil
}

// RemoveParams unregisters a set added with AddParams. If it was trainable,
// the base weights become trainable again.
func (m *Model) RemoveParams(ps *ParamSet) {
	for i, e := range m.extra {
		if e == ps {
			m.extra = append(m.extra[:i], m.extra[i+1:]...)
			break
		}
	}
	if m.trainable == ps {
		m.trainable = m.Weights
	}
}

func (m *Model) hasExtra(ps *ParamSet) bool {
	for _, e := range m.extra {
		if e == ps {
			return true
		}
	}
	return false
}

// lookup finds a parameter by name in the weights or a registered set.
func (m *Model) lookup(name string) (*Param, *ParamSet) {
	if p := m.Weights.Get(name); p != nil {
		return p, m.Weights
	}
	for _, ps := range m.extra {
		if p := ps.Get(name); p != nil {
			return p, ps
		}
	}
	return nil, nil
}

// ParamNames lists every parameter the model's graphs can bind, sorted.
func (m *Model) ParamNames() []string {
	names := m.Weights.Names()
	for _, ps := range m.extra {
		names = append(names, ps.Names()...)
	}
	sort.Strings(names)
	return names
}
