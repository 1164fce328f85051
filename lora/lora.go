package lora

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"regexp"
	"sync"
	"weak"

	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/quant"
	G "gorgonia.org/gorgonia"
)

// DefaultAdapter is the adapter name Apply uses, as PEFT's "default".
const DefaultAdapter = "default"

// Model is a base model with LoRA adapters. It replaces each adapted
// linear layer of Base with a *Layer that computes
//
//	y = base(x) + scale·dropout(x)·Aᵀ·Bᵀ
//
// for the active adapter, where base is whatever model.Linear was installed
// before (a DenseLinear, or a quantized layer): the adapter composes with
// it and never looks inside it, except to merge.
//
// The active adapter's parameters are the model's trainable set, so
// model.NewTrainer on Base trains only them: gradient buffers and AdamW
// state are sized for the adapter, and the base weights get no gradient
// computation. Build trainers and replicas after changing the active
// adapter (graphs keep the layers they were built with). A Model is not
// safe for concurrent modification; inference and training on graphs
// built from it may run concurrently.
type Model struct {
	Base *model.Model

	layers   map[string]*Layer
	adapters map[string]*Adapter
	order    []string // adapter names in creation order
	active   string
	disabled bool
}

// Adapter is one named set of LoRA matrices over some of the model's
// linear layers. Params holds, per module, A ([r, in], named
// "<module>.lora_A.<adapter>.weight") and B ([out, r], "….lora_B.…").
type Adapter struct {
	Name    string   // the adapter's name, as PEFT's adapter_name
	Config  Config   // its configuration (rank, alpha, dropout, targets…)
	Modules []string // adapted linear layers, in the model's order
	Params  *model.ParamSet

	owner  *Model
	scale  float32            // Config.Scale()
	scales map[string]float32 // per module: Config.ModuleScale
	merged bool
}

// Layer is an adapted linear layer: the base layer plus the active
// adapter's low-rank update. It implements model.Linear.
type Layer struct {
	name  string
	base  model.Linear
	owner *Model
	// premerge is the base layer before a merge that replaced it (an int8
	// base is requantized into a new layer); Unmerge puts it back exactly.
	premerge model.Linear

	// baseNodes records, for tests, the nodes of a DenseLinear base's
	// parameters in the last graph built. The pointers are weak: a strong
	// one would keep that graph, and every activation buffer its ops own,
	// alive, which defeats gradient checkpointing's graphs built per block
	// and dropped after each pass (model.ReplicaOptions).
	mu        sync.Mutex
	baseNodes []weak.Pointer[G.Node]
}

// Wrap returns m with no adapter yet; add some with AddAdapter.
func Wrap(m *model.Model) (*Model, error) {
	if m == nil {
		return nil, fmt.Errorf("lora: nil model")
	}
	for _, name := range m.LinearNames() {
		l, err := m.Linear(name)
		if err != nil {
			return nil, fmt.Errorf("lora: %w", err)
		}
		if _, ok := l.(*Layer); ok {
			return nil, fmt.Errorf("lora: layer %q already has LoRA adapters", name)
		}
	}
	return &Model{Base: m, layers: map[string]*Layer{}, adapters: map[string]*Adapter{}}, nil
}

// Apply wraps m and adds cfg as the active adapter DefaultAdapter: the
// common one-adapter case.
func Apply(m *model.Model, cfg Config) (*Model, error) {
	lm, err := Wrap(m)
	if err != nil {
		return nil, err
	}
	if _, err := lm.AddAdapter(DefaultAdapter, cfg); err != nil {
		return nil, err
	}
	return lm, nil
}

var adapterName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// AddAdapter creates an adapter called name on the layers cfg selects,
// initialized from cfg.Seed (A random, B zero). The first adapter becomes
// the active one; later ones are activated with SetActive.
func (lm *Model) AddAdapter(name string, cfg Config) (*Adapter, error) {
	a, err := lm.newAdapter(name, cfg, true)
	if err != nil {
		return nil, err
	}
	a.initialize()
	if err := lm.install(a); err != nil {
		return nil, err
	}
	return a, nil
}

// newAdapter validates and allocates an adapter without installing it.
func (lm *Model) newAdapter(name string, cfg Config, strict bool) (*Adapter, error) {
	cfg, modules, specs, err := lm.plan(name, cfg, strict)
	if err != nil {
		return nil, err
	}
	ps, err := model.NewParamSet(specs)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	a := &Adapter{Name: name, Config: cfg, Modules: modules, Params: ps, owner: lm, scale: float32(cfg.Scale()), scales: map[string]float32{}}
	for _, mod := range modules {
		a.scales[mod] = float32(cfg.ModuleScale(mod))
	}
	return a, nil
}

// plan validates an adapter and lists its parameters without allocating
// them. strict refuses a target entry that selects nothing (see resolve).
func (lm *Model) plan(name string, cfg Config, strict bool) (Config, []string, []model.ParamSpec, error) {
	if !adapterName.MatchString(name) {
		return cfg, nil, nil, fmt.Errorf("lora: adapter name %q: want 1–64 letters, digits, '_' or '-': %w", name, ErrConfig)
	}
	if _, dup := lm.adapters[name]; dup {
		return cfg, nil, nil, fmt.Errorf("lora: adapter %q already exists: %w", name, ErrConfig)
	}
	if cfg.Init == "" {
		cfg.Init = InitKaiming
	}
	if err := cfg.Validate(); err != nil {
		return cfg, nil, nil, err
	}
	modules, err := cfg.resolve(lm.Base.LinearNames(), strict)
	if err != nil {
		return cfg, nil, nil, err
	}
	var specs []model.ParamSpec
	for _, mod := range modules {
		l, err := lm.Base.Linear(mod)
		if err != nil {
			return cfg, nil, nil, fmt.Errorf("lora: %w", err)
		}
		in, out := l.Dims()
		r := cfg.ModuleRank(mod)
		if err := checkScale(cfg.ModuleAlpha(mod), r, cfg.UseRSLoRA); err != nil {
			return cfg, nil, nil, fmt.Errorf("lora: %s: %w", mod, err)
		}
		specs = append(specs,
			model.ParamSpec{Name: paramName(mod, "lora_A", name), Shape: []int{r, in}, Decay: true},
			model.ParamSpec{Name: paramName(mod, "lora_B", name), Shape: []int{out, r}, Decay: true})
	}
	return cfg, modules, specs, nil
}

// install registers a's parameters with the base model and wraps its layers.
func (lm *Model) install(a *Adapter) error {
	if err := lm.Base.AddParams(a.Params); err != nil {
		return fmt.Errorf("lora: %w", err)
	}
	for _, mod := range a.Modules {
		if _, ok := lm.layers[mod]; ok {
			continue
		}
		base, err := lm.Base.Linear(mod)
		if err != nil {
			return fmt.Errorf("lora: %w", err)
		}
		l := &Layer{name: mod, base: base, owner: lm}
		if err := lm.Base.SetLinear(mod, l); err != nil {
			return fmt.Errorf("lora: %w", err)
		}
		lm.layers[mod] = l
	}
	lm.adapters[a.Name] = a
	lm.order = append(lm.order, a.Name)
	if lm.active == "" {
		return lm.SetActive(a.Name)
	}
	return nil
}

func paramName(module, which, adapter string) string {
	return module + "." + which + "." + adapter + ".weight"
}

// initialize draws A per module from a stream keyed by (seed, module name)
// and zeroes B.
func (a *Adapter) initialize() {
	for _, mod := range a.Modules {
		A, B := a.A(mod), a.B(mod)
		rng := rand.New(rand.NewPCG(a.Config.Seed, hashString(mod)))
		in := A.Shape[1]
		switch a.Config.Init {
		case InitGaussian:
			std := 1 / float64(A.Shape[0])
			for i := range A.Data {
				A.Data[i] = float32(rng.NormFloat64() * std)
			}
		default:
			bound := 1 / math.Sqrt(float64(in))
			for i := range A.Data {
				A.Data[i] = float32((2*rng.Float64() - 1) * bound)
			}
		}
		clear(B.Data)
	}
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// A returns the lora_A matrix ([r, in]) of module, or nil.
func (a *Adapter) A(module string) *model.Param {
	return a.Params.Get(paramName(module, "lora_A", a.Name))
}

// B returns the lora_B matrix ([out, r]) of module, or nil.
func (a *Adapter) B(module string) *model.Param {
	return a.Params.Get(paramName(module, "lora_B", a.Name))
}

// NumParams returns the number of trainable adapter weights.
func (a *Adapter) NumParams() int { return a.Params.Len() }

// Scale returns the factor applied to B·A in the modules that no
// RankPattern or AlphaPattern entry overrides: Config.Scale().
func (a *Adapter) Scale() float32 { return a.scale }

// ModuleScale returns the factor applied to B·A in module (0 if the adapter
// does not adapt it).
func (a *Adapter) ModuleScale(module string) float32 { return a.scales[module] }

// Merged reports whether the adapter is merged into the base weights.
func (a *Adapter) Merged() bool { return a.merged }

// Adapter returns the adapter called name, or nil.
func (lm *Model) Adapter(name string) *Adapter { return lm.adapters[name] }

// Adapters lists the adapter names in creation order.
func (lm *Model) Adapters() []string { return append([]string(nil), lm.order...) }

// Active returns the active adapter, or nil when there is none.
func (lm *Model) Active() *Adapter { return lm.adapters[lm.active] }

// SetActive makes the adapter called name the one that layers apply and
// training updates (the base model's trainable set). It also re-enables
// adapters after Disable.
func (lm *Model) SetActive(name string) error {
	a, ok := lm.adapters[name]
	if !ok {
		return fmt.Errorf("lora: no adapter %q (have %v)", name, lm.order)
	}
	if err := lm.Base.SetTrainable(a.Params); err != nil {
		return fmt.Errorf("lora: %w", err)
	}
	lm.active = name
	lm.disabled = false
	return nil
}

// Disable makes every adapted layer behave as its base layer, until Enable
// or SetActive. It fails while an adapter is merged (unmerge it first), as
// the base weights then carry the adapter.
func (lm *Model) Disable() error {
	for _, name := range lm.order {
		if lm.adapters[name].merged {
			return fmt.Errorf("lora: disable: adapter %q is merged into the base; unmerge it first", name)
		}
	}
	lm.disabled = true
	return nil
}

// Enable undoes Disable.
func (lm *Model) Enable() { lm.disabled = false }

// Disabled reports whether adapters are disabled.
func (lm *Model) Disabled() bool { return lm.disabled }

// DeleteAdapter removes an unmerged adapter. Deleting the active one leaves
// no adapter active and the base weights trainable again.
func (lm *Model) DeleteAdapter(name string) error {
	a, ok := lm.adapters[name]
	if !ok {
		return fmt.Errorf("lora: no adapter %q (have %v)", name, lm.order)
	}
	if a.merged {
		return fmt.Errorf("lora: adapter %q is merged; unmerge it before deleting it", name)
	}
	lm.Base.RemoveParams(a.Params)
	delete(lm.adapters, name)
	for i, n := range lm.order {
		if n == name {
			lm.order = append(lm.order[:i], lm.order[i+1:]...)
			break
		}
	}
	if lm.active == name {
		lm.active = ""
	}
	return nil
}

// TrainableParams returns the number of weights training updates: the
// active adapter's, or the base model's when no adapter is active.
func (lm *Model) TrainableParams() int { return lm.Base.Trainable().Len() }

// applied returns the adapter whose update layer l adds now, or nil.
func (lm *Model) applied(l *Layer) *Adapter {
	if lm.disabled {
		return nil
	}
	a := lm.adapters[lm.active]
	if a == nil || a.merged || a.A(l.name) == nil {
		return nil
	}
	return a
}

// Dims returns the base layer's input and output widths.
func (l *Layer) Dims() (in, out int) { return l.base.Dims() }

// Name returns the module name of the layer.
func (l *Layer) Name() string { return l.name }

// Base returns the wrapped base layer.
func (l *Layer) Base() model.Linear { return l.base }

// OwnsWeights reports whether the base layer owns its weights (an int8
// base does; a DenseLinear does not), so that model.Model.ReleaseReplaced
// frees the float32 parameters under an adapted int8 layer. The adapter's
// own matrices are not the base model's parameters either way.
func (l *Layer) OwnsWeights() bool {
	o, ok := l.base.(model.WeightOwner)
	if !ok || !o.OwnsWeights() {
		return false
	}
	if l.premerge != nil {
		p, ok := l.premerge.(model.WeightOwner)
		return ok && p.OwnsWeights()
	}
	return true
}

// BuildGraph adds the base layer and, for the active adapter, the dropout,
// down-projection (x·Aᵀ) and scaled up-projection added onto the base output.
func (l *Layer) BuildGraph(gc *model.GraphContext, x *G.Node) (*G.Node, error) {
	if y, ok, err := l.buildFused(gc, x); ok || err != nil {
		return y, err
	}
	y, err := l.base.BuildGraph(gc, x)
	if err != nil {
		return nil, err
	}
	if d, ok := l.base.(*model.DenseLinear); ok {
		l.recordBase(denseNodes(gc, d))
	}
	a := l.owner.applied(l)
	if a == nil {
		return y, nil
	}
	h, err := newDown(x, gc.Node(a.A(l.name)), a.Config.Dropout, gc.Dropout(), l.stream(a))
	if err != nil {
		return nil, fmt.Errorf("lora: %s: %w", l.name, err)
	}
	// The base ops known not to read their output in backward let the
	// adapter add onto that output in place.
	var inPlace bool
	switch l.base.(type) {
	case *model.DenseLinear, *quant.Linear, *model.BF16Linear:
		inPlace = true
	}
	return newUpAdd(y, h, gc.Node(a.B(l.name)), a.scales[l.name], inPlace)
}

// buildFused adds the layer as one fusedOp when its base is a bf16 layer
// or a frozen float32 one (outside bf16 mixed precision, whose products the
// dense op's bf16 mode computes), the active adapter applies to it, and the
// low-rank products run at its rank and widths; it reports false (and adds
// nothing) otherwise.
func (l *Layer) buildFused(gc *model.GraphContext, x *G.Node) (*G.Node, bool, error) {
	a := l.owner.applied(l)
	if a == nil {
		return nil, false, nil
	}
	var base frozenBase
	var own []*G.Node
	switch b := l.base.(type) {
	case *model.BF16Linear:
		base = bf16Base{b}
	case *model.DenseLinear:
		if gc.Precision() != model.PrecisionFP32 || gc.Trainable(b.Weight) || b.Bias != nil && gc.Trainable(b.Bias) {
			return nil, false, nil
		}
		in, out := b.Dims()
		base, own = denseBase{in: in, out: out, bias: b.Bias != nil}, denseNodes(gc, b)
	default:
		return nil, false, nil
	}
	an := a.A(l.name)
	if in, out := base.Dims(); !lowRank(an.Shape[0], in) || !lowRank(an.Shape[0], out) {
		return nil, false, nil
	}
	y, err := newFused(base, own, x, gc.Node(an), gc.Node(a.B(l.name)), a.scales[l.name], a.Config.Dropout, gc.Dropout(), l.stream(a))
	if err != nil {
		return nil, true, fmt.Errorf("lora: %s: %w", l.name, err)
	}
	if own != nil {
		l.recordBase(own)
	}
	return y, true, nil
}

// denseNodes returns the nodes of d's weight and bias (when present).
func denseNodes(gc *model.GraphContext, d *model.DenseLinear) []*G.Node {
	nodes := []*G.Node{gc.Node(d.Weight)}
	if d.Bias != nil {
		nodes = append(nodes, gc.Node(d.Bias))
	}
	return nodes
}

// recordBase keeps weak pointers to the base parameters' nodes (baseNodes).
func (l *Layer) recordBase(nodes []*G.Node) {
	ws := make([]weak.Pointer[G.Node], len(nodes))
	for i, n := range nodes {
		ws[i] = weak.Make(n)
	}
	l.mu.Lock()
	l.baseNodes = ws
	l.mu.Unlock()
}

// stream is the layer's own mask stream: its name and the adapter's seed,
// with the top bit set so it never meets the model's small stream numbers.
func (l *Layer) stream(a *Adapter) uint64 { return (a.Config.Seed ^ hashString(l.name)) | 1<<63 }

var scratch = sync.Pool{New: func() any { return new([]float32) }}

// Forward computes the layer without a graph (no dropout: inference).
func (l *Layer) Forward(y, x []float32, rows int) error {
	if err := l.base.Forward(y, x, rows); err != nil {
		return err
	}
	a := l.owner.applied(l)
	if a == nil || rows == 0 {
		return nil
	}
	in, out := l.Dims()
	r := a.A(l.name).Shape[0]
	sp := scratch.Get().(*[]float32)
	defer scratch.Put(sp)
	if cap(*sp) < rows*r {
		*sp = make([]float32, rows*r)
	}
	h := (*sp)[:rows*r]
	kernels.Sgemm(false, true, rows, r, in, 1, x, in, a.A(l.name).Data, in, 0, h, r)
	kernels.Sgemm(false, true, rows, out, r, a.scales[l.name], h, r, a.B(l.name).Data, r, 1, y, out)
	return nil
}

// DeltaMerger is implemented by base layers other than model.DenseLinear
// that can absorb a weight update, such as an int8 layer that dequantizes,
// adds and requantizes.
type DeltaMerger interface {
	// MergeDelta adds delta, laid out [in, out] like a DenseLinear weight,
	// to the layer's weight and returns the largest absolute difference
	// between the stored weight and the exact sum (0 for float storage).
	MergeDelta(delta []float32) (maxAbsErr float64, err error)
}

// MergeReport describes a merge or unmerge.
type MergeReport struct {
	Adapter     string  // the adapter merged or unmerged
	Modules     int     // the number of layers changed
	MaxAbsErr   float64 // largest error the base storage introduced (0 for float32 weights)
	MaxAbsDelta float64 // largest |scale·B·A| element added to (or taken from) a weight
}

// delta returns sign·scale·(B·A)ᵀ, [in, out].
func (a *Adapter) delta(mod string, sign float32) []float32 {
	A, B := a.A(mod), a.B(mod)
	r, in, out := A.Shape[0], A.Shape[1], B.Shape[0]
	d := make([]float32, in*out)
	kernels.Sgemm(true, true, in, out, r, sign*a.scales[mod], A.Data, in, B.Data, r, 0, d, out)
	return d
}

// maxAbs returns the largest |v|.
func maxAbs(d []float32) float64 {
	var m float32
	for _, v := range d {
		m = max(m, v, -v)
	}
	return float64(m)
}

// addDelta adds sign·ΔW of a into module's base weight. It returns the
// error the base storage introduced and the largest |ΔW| element.
func (lm *Model) addDelta(a *Adapter, mod string, sign float32) (float64, float64, error) {
	l := lm.layers[mod]
	switch b := l.base.(type) {
	case *model.DenseLinear:
		// W[in, out] += sign·scale·Aᵀ·Bᵀ: ΔW = B·A is [out, in], the
		// transpose of galleon's [in, out] layout.
		d := a.delta(mod, sign)
		for i, v := range d {
			b.Weight.Data[i] += v
		}
		return 0, maxAbs(d), nil
	case *quant.Linear:
		if sign < 0 {
			// Requantization is not invertible: restore the int8 layer the
			// merge replaced, bit for bit.
			if l.premerge == nil {
				return 0, 0, fmt.Errorf("lora: unmerge %s: the int8 base was not merged by this adapter", mod)
			}
			l.base, l.premerge = l.premerge, nil
			return 0, 0, nil
		}
		d := a.delta(mod, 1)
		nl, e, err := mergeInt8(b, d)
		if err != nil {
			return 0, 0, fmt.Errorf("lora: merge into %s: %w", mod, err)
		}
		l.premerge, l.base = b, nl
		return e, maxAbs(d), nil
	case DeltaMerger:
		d := a.delta(mod, sign)
		e, err := b.MergeDelta(d)
		return e, maxAbs(d), err
	default:
		return 0, 0, fmt.Errorf("lora: merge into %s: base layer %T cannot absorb a weight update", mod, l.base)
	}
}

// Merge adds the active adapter into the base weights (W += scale·ΔW), so
// the layers then run at base cost. An int8 base (*quant.Linear) is
// dequantized, merged and requantized into a new int8 layer, and the
// report gives the largest error the requantization introduced; Unmerge
// restores the original int8 layer exactly. Other bases must implement
// DeltaMerger.
func (lm *Model) Merge() (MergeReport, error) {
	a := lm.Active()
	if a == nil {
		return MergeReport{}, fmt.Errorf("lora: merge: no active adapter")
	}
	if a.merged {
		return MergeReport{}, fmt.Errorf("lora: merge: adapter %q is already merged", a.Name)
	}
	rep := MergeReport{Adapter: a.Name}
	for _, mod := range a.Modules {
		e, d, err := lm.addDelta(a, mod, 1)
		if err != nil {
			return rep, err
		}
		rep.Modules++
		rep.MaxAbsErr, rep.MaxAbsDelta = max(rep.MaxAbsErr, e), max(rep.MaxAbsDelta, d)
	}
	a.merged = true
	return rep, nil
}

// Unmerge subtracts the merged adapter again (W −= scale·ΔW), restoring the
// base weights up to float32 rounding.
func (lm *Model) Unmerge() (MergeReport, error) {
	for _, name := range lm.order {
		a := lm.adapters[name]
		if !a.merged {
			continue
		}
		rep := MergeReport{Adapter: a.Name}
		for _, mod := range a.Modules {
			e, d, err := lm.addDelta(a, mod, -1)
			if err != nil {
				return rep, err
			}
			rep.Modules++
			rep.MaxAbsErr, rep.MaxAbsDelta = max(rep.MaxAbsErr, e), max(rep.MaxAbsDelta, d)
		}
		a.merged = false
		return rep, nil
	}
	return MergeReport{}, fmt.Errorf("lora: unmerge: no adapter is merged")
}

// Unload removes every adapter: the base layers are put back and Base is a
// plain model again, with its weights trainable. Unmerged adapters are
// dropped; a merged one stays in the weights.
func (lm *Model) Unload() (*model.Model, error) {
	for _, name := range lm.order {
		if lm.adapters[name].merged {
			lm.adapters[name].merged = false // its update stays in the weights
		}
	}
	for mod, l := range lm.layers {
		if err := lm.Base.SetLinear(mod, l.base); err != nil {
			return nil, fmt.Errorf("lora: %w", err)
		}
	}
	for _, name := range lm.order {
		lm.Base.RemoveParams(lm.adapters[name].Params)
	}
	if err := lm.Base.SetTrainable(lm.Base.Weights); err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	base := lm.Base
	*lm = Model{Base: base, layers: map[string]*Layer{}, adapters: map[string]*Adapter{}}
	return base, nil
}

// MergeAndUnload merges the active adapter (unless it is merged already)
// and returns the base model with plain layers, as PEFT's merge_and_unload.
func (lm *Model) MergeAndUnload() (*model.Model, MergeReport, error) {
	var rep MergeReport
	if a := lm.Active(); a == nil || !a.merged {
		var err error
		if rep, err = lm.Merge(); err != nil {
			return nil, rep, err
		}
	}
	m, err := lm.Unload()
	return m, rep, err
}
