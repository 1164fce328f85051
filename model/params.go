package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// Param is one named tensor of a ParamSet. Data is a view into the set's
// contiguous buffer, so optimizers, gradient reductions and checkpoints work
// on one slice while graphs bind each tensor separately.
type Param struct {
	Name   string    // the Hugging Face GPT-2 name, e.g. transformer.h.0.attn.c_attn.weight
	Shape  []int     // the tensor's dimensions
	Offset int       // position of Data in the set's buffer (−1 once released)
	Data   []float32 // len = product of Shape (nil once Model.ReleaseReplaced freed it)
	Decay  bool      // whether AdamW applies weight decay
}

// Size returns the number of elements.
func (p *Param) Size() int { return len(p.Data) }

// ParamSpec describes a parameter to allocate.
type ParamSpec struct {
	Name  string // the parameter's name, unique in its set
	Shape []int  // its dimensions, all positive
	Decay bool   // whether AdamW applies weight decay
}

// ParamSet is an ordered set of named float32 tensors in one contiguous
// buffer. The order is fixed at creation and is the order of checkpoints,
// gradient buffers and optimizer state.
type ParamSet struct {
	Data   []float32 // every parameter's values, contiguous, in order
	Params []*Param  // the parameters, in order
	index  map[string]*Param
}

// NewParamSet allocates a zeroed set for specs. Names must be unique and
// non-empty, shapes positive, and the total at most MaxParams elements
// (sizes are multiplied with overflow checks): anything else is an error,
// returned before any allocation.
func NewParamSet(specs []ParamSpec) (*ParamSet, error) {
	var total int64
	seen := make(map[string]bool, len(specs))
	for _, s := range specs {
		if s.Name == "" {
			return nil, fmt.Errorf("model: parameter with an empty name")
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("model: duplicate parameter %q", s.Name)
		}
		seen[s.Name] = true
		n := int64(1)
		for _, d := range s.Shape {
			if d <= 0 {
				return nil, fmt.Errorf("model: parameter %q has shape %v", s.Name, s.Shape)
			}
			var err error
			if n, err = mulChecked(n, int64(d)); err != nil {
				return nil, fmt.Errorf("model: parameter %q of shape %v: %w", s.Name, s.Shape, err)
			}
		}
		var err error
		if total, err = addChecked(total, n); err == nil && (total > MaxParams || total > math.MaxInt) {
			err = fmt.Errorf("%w: more than %d elements", ErrConfig, min(MaxParams, int64(math.MaxInt)))
		}
		if err != nil {
			return nil, fmt.Errorf("model: parameter set too large at %q: %w", s.Name, err)
		}
	}
	ps := &ParamSet{Data: make([]float32, total), index: make(map[string]*Param, len(specs))}
	off := 0
	for _, s := range specs {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		p := &Param{Name: s.Name, Shape: append([]int(nil), s.Shape...), Offset: off, Data: ps.Data[off : off+n : off+n], Decay: s.Decay}
		ps.Params = append(ps.Params, p)
		ps.index[s.Name] = p
		off += n
	}
	return ps, nil
}

// Get returns the parameter called name, or nil.
func (ps *ParamSet) Get(name string) *Param { return ps.index[name] }

// Len returns the total number of elements.
func (ps *ParamSet) Len() int { return len(ps.Data) }

// Names returns the parameter names in order.
func (ps *ParamSet) Names() []string {
	names := make([]string, len(ps.Params))
	for i, p := range ps.Params {
		names[i] = p.Name
	}
	return names
}

// Layout returns the specs the set was created from, so that an identically
// shaped set (gradients, optimizer moments) can be allocated.
func (ps *ParamSet) Layout() []ParamSpec {
	specs := make([]ParamSpec, len(ps.Params))
	for i, p := range ps.Params {
		specs[i] = ParamSpec{Name: p.Name, Shape: p.Shape, Decay: p.Decay}
	}
	return specs
}

// Module names of GPT-2, as Hugging Face names them.
const (
	NameWTE  = "transformer.wte"
	NameWPE  = "transformer.wpe"
	NameLNF  = "transformer.ln_f"
	NameHead = "lm_head" // only present when embeddings are not tied
)

// initWeights fills ps (a set laid out by c.paramSpecs) from seed: N(0,
// 0.02) for matrices and embeddings, zero biases and unit norm gains, as
// both families' Hugging Face initializers do. GPT-2 also scales the
// projections into the residual stream to N(0, 0.02/√(2·layers)).
func initWeights(ps *ParamSet, c Config, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x6761_6c6c_656f_6e)) // "galleon"
	resid := 0.02 / math.Sqrt(2*float64(c.Layers))
	scaled := map[string]bool{}
	if c.FamilyName() == FamilyGPT2 {
		for _, mods := range c.modules() {
			for j, s := range c.arch().steps {
				if s.residProj {
					scaled[mods[j]+".weight"] = true
				}
			}
		}
	}
	// Sorted names make the draw independent of the set's order.
	names := ps.Names()
	sort.Strings(names)
	for _, name := range names {
		p := ps.Get(name)
		switch {
		case strings.HasSuffix(name, ".bias"):
			clear(p.Data)
		case len(p.Shape) == 1: // a norm's gain
			for i := range p.Data {
				p.Data[i] = 1
			}
		default:
			std := 0.02
			if scaled[name] {
				std = resid
			}
			for i := range p.Data {
				p.Data[i] = float32(rng.NormFloat64() * std)
			}
		}
	}
}
