package model

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// LoadOption changes how LoadPretrained reads a directory.
type LoadOption func(*loadOptions) error

type loadOptions struct {
	keepBF16    bool                            // KeepBF16
	weightsFile string                          // read this file of the directory instead of model.safetensors or the index
	takes       func(module string) bool        // linear modules the loader builds
	load        func(*HFLinear) (Linear, error) // builds a taken module's layer
}

// WithWeightsFile reads the weights from the named safetensors file of the
// directory (a plain file name) instead of model.safetensors or the shards
// of model.safetensors.index.json: quant's int8 directories keep theirs in
// model.int8.safetensors, beside the original config.json, so that no
// float loader mistakes them for float weights.
func WithWeightsFile(name string) LoadOption {
	return func(o *loadOptions) error {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
			return fmt.Errorf("model: weights file %q is not a file name", name)
		}
		o.weightsFile = name
		return nil
	}
}

// WithLinearLoader hands the linear modules for which takes reports true
// to load, which builds each one's layer as LoadPretrained streams the
// files: the model never allocates float32 parameters for those modules
// (module.weight, module.bias), as if Model.ReleaseReplaced had freed them,
// so memory follows what load keeps (one byte per weight for quant's int8
// layers) plus the remaining float32 tensors (embeddings, norms, the layers
// not taken) plus the file bytes of one tensor at a time.
//
// load gets the module's weight through an *HFLinear, valid only during the
// call, and must return a layer of the module's widths that owns its
// weights (a WeightOwner reporting true). A taken module's weight may be
// stored in the file as float (F32, F16, BF16, in the family's layout) or
// as I8 [out, in] with a per-output-channel F32 tensor
// "<module>.weight_scale" [out] (quant's int8 directories); its bias, if
// the architecture has one, is float.
func WithLinearLoader(takes func(module string) bool, load func(*HFLinear) (Linear, error)) LoadOption {
	return func(o *loadOptions) error {
		if takes == nil || load == nil {
			return fmt.Errorf("model: WithLinearLoader: nil function")
		}
		o.takes, o.load = takes, load
		return nil
	}
}

// HFScaleSuffix names the per-output-channel scale tensor of an I8 linear
// weight: "<module>.weight" + HFScaleSuffix.
const HFScaleSuffix = "_scale"

// HFLinear is one linear module's weight as a WithLinearLoader function
// receives it: read it with Rows (float weights) or Int8 (I8 weights).
type HFLinear struct {
	Module  string    // the module's name, e.g. model.layers.0.self_attn.q_proj
	In, Out int       // its input and output widths
	DType   string    // the weight's stored type: "float32", "float16", "bfloat16" or "int8"
	Bias    []float32 // the bias (Out values, float32), or nil

	st        *stFile
	w, scale  *stEntry
	inOut     bool // stored [in, out] (GPT-2's Conv1D) rather than [out, in]
	buf       *[]byte
	rowsBuf   []float32
	loadError func(format string, args ...any) error
}

// Rows reads a float weight n output channels at a time: f receives the
// first channel's index and rows, k·In values holding channels first …
// first+k−1 (k ≤ n), each row the weights of one output channel in input
// order (torch.nn.Linear's [out, in]), widened exactly to float32. The
// slice is reused between calls: f must not keep it. An I8 weight is an
// error (use Int8).
func (w *HFLinear) Rows(n int, f func(first int, rows []float32) error) error {
	if w.DType == "int8" {
		return w.loadError("tensor %q is I8: read it with Int8", w.w.name)
	}
	b, err := w.st.readRaw(w.w, w.buf)
	if err != nil {
		return err
	}
	n = max(1, min(n, w.Out))
	if cap(w.rowsBuf) < n*w.In {
		w.rowsBuf = make([]float32, n*w.In)
	}
	dt := w.w.dtype
	es := int(dt.Size())
	for first := 0; first < w.Out; first += n {
		k := min(n, w.Out-first)
		rows := w.rowsBuf[:k*w.In]
		if w.inOut {
			for r := range k {
				o := first + r
				for i := range w.In {
					rows[r*w.In+i] = widenOne(b[(i*w.Out+o)*es:], dt)
				}
			}
		} else {
			widen(rows, b[first*w.In*es:(first+k)*w.In*es], dt)
		}
		if err := f(first, rows); err != nil {
			return err
		}
	}
	return nil
}

// Int8 reads an I8 weight [Out, In] and its scales [Out] into new slices.
// A float weight is an error (use Rows).
func (w *HFLinear) Int8() (data []int8, scale []float32, err error) {
	if w.DType != "int8" {
		return nil, nil, w.loadError("tensor %q is %v, not I8", w.w.name, w.w.dtype)
	}
	b, err := w.st.readRaw(w.w, w.buf)
	if err != nil {
		return nil, nil, err
	}
	data = make([]int8, len(b))
	for i, v := range b {
		data[i] = int8(v)
	}
	sb, err := w.st.readRaw(w.scale, w.buf)
	if err != nil {
		return nil, nil, err
	}
	scale = make([]float32, w.Out)
	for i := range scale {
		scale[i] = math.Float32frombits(binary.LittleEndian.Uint32(sb[4*i:]))
	}
	return data, scale, nil
}

// checkTaken checks a taken module's tensors in where (weight, optional
// scale, bias) and returns the names it accounts for beyond the model's
// parameters (the scale).
func (c Config) checkTaken(module string, spec ParamSpec, where map[string]*stEntry, from map[string]*stFile) (extra string, err error) {
	wn := module + ".weight"
	e := where[wn]
	in, out := int64(spec.Shape[0]), int64(spec.Shape[1])
	if e.dtype == safetensors.I8 {
		if !slices.Equal(e.shape, []int64{out, in}) {
			return "", fmt.Errorf("%w: %s: I8 tensor %q has shape %v, want [%d %d]", ErrCheckpoint, from[wn].path, e.name, e.shape, out, in)
		}
		sn := wn + HFScaleSuffix
		s := where[sn]
		if s == nil {
			return "", fmt.Errorf("%w: I8 tensor %q has no scale tensor %q", ErrCheckpoint, e.name, sn)
		}
		if s.dtype != safetensors.F32 || !slices.Equal(s.shape, []int64{out}) {
			return "", fmt.Errorf("%w: %s: scale tensor %q is %v %v, want F32 [%d]", ErrCheckpoint, from[sn].path, sn, s.dtype, s.shape, out)
		}
		return sn, nil
	}
	if want := c.hfShape(wn, spec.Shape); !slices.Equal(e.shape, want) {
		return "", fmt.Errorf("%w: %s: tensor %q has shape %v, want %v", ErrCheckpoint, from[wn].path, e.name, e.shape, want)
	}
	if !isFloat(e.dtype) {
		return "", fmt.Errorf("%w: %s: tensor %q is %v; a linear weight is F32, F16, BF16 or I8 with a scale", ErrCheckpoint, from[wn].path, e.name, e.dtype)
	}
	return "", nil
}

// loadTaken builds the layers of the taken modules through o.load, in the
// configuration's order, reading one tensor at a time.
func (c Config) loadTaken(o loadOptions, specs map[string]ParamSpec, where map[string]*stEntry, from map[string]*stFile, buf *[]byte) (map[string]Linear, error) {
	layers := map[string]Linear{}
	for _, module := range c.LinearNames() {
		if !o.takes(module) {
			continue
		}
		wn := module + ".weight"
		e, f := where[wn], from[wn]
		spec := specs[wn]
		w := &HFLinear{Module: module, In: spec.Shape[0], Out: spec.Shape[1], DType: torchDType(e.dtype),
			st: f, w: e, inOut: !c.hfTranspose(wn), buf: buf,
			loadError: func(format string, args ...any) error {
				return fmt.Errorf("%w: %s: "+format, append([]any{ErrCheckpoint, f.path}, args...)...)
			}}
		if e.dtype == safetensors.I8 {
			w.DType, w.scale = "int8", where[wn+HFScaleSuffix]
		}
		if bs, ok := specs[module+".bias"]; ok {
			w.Bias = make([]float32, bs.Shape[0])
			if err := from[module+".bias"].readFloats(where[module+".bias"], w.Bias, 0, buf); err != nil {
				return nil, err
			}
		}
		l, err := o.load(w)
		if err != nil {
			return nil, fmt.Errorf("model: loading layer %q: %w", module, err)
		}
		if l == nil {
			return nil, fmt.Errorf("model: loading layer %q: the loader returned no layer", module)
		}
		layers[module] = l
	}
	return layers, nil
}

// newWithLayers returns a zeroed model of cfg whose linear modules named in
// layers are those layers, with no float32 parameters allocated for them
// (the state Model.ReleaseReplaced leaves). Each layer must own its
// weights and have its module's widths. A non-nil tokens is the token
// embedding in bfloat16 (KeepBF16), which then has no float32 parameter
// either.
func newWithLayers(cfg Config, layers map[string]Linear, tokens []uint16) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	specs := cfg.paramSpecs()
	byName := map[string]ParamSpec{}
	for _, s := range specs {
		byName[s.Name] = s
	}
	drop := map[string]bool{}
	for name, l := range layers {
		s, ok := byName[name+".weight"]
		if !ok || !slices.Contains(cfg.LinearNames(), name) {
			return nil, fmt.Errorf("model: no linear layer %q", name)
		}
		if o, ok := l.(WeightOwner); !ok || !o.OwnsWeights() {
			return nil, fmt.Errorf("model: layer %q (%T) does not own its weights", name, l)
		}
		if in, out := l.Dims(); in != s.Shape[0] || out != s.Shape[1] {
			return nil, fmt.Errorf("model: layer %q is %d→%d, the module is %d→%d", name, in, out, s.Shape[0], s.Shape[1])
		}
		drop[name+".weight"], drop[name+".bias"] = true, true
	}
	if tokens != nil {
		if !cfg.tokensBF16OK() || len(tokens) != cfg.Vocab*cfg.DModel {
			return nil, fmt.Errorf("model: a bf16 token embedding of %d values for a %s model of %d×%d", len(tokens), cfg.HFModelType(), cfg.Vocab, cfg.DModel)
		}
		drop[cfg.TokenEmbeddingName()] = true
	}
	kept := make([]ParamSpec, 0, len(specs))
	for _, s := range specs {
		if !drop[s.Name] {
			kept = append(kept, s)
		}
	}
	ps, err := NewParamSet(kept)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, Weights: ps, trainable: ps, linears: map[string]Linear{}, tokensBF16: tokens}
	for _, name := range cfg.LinearNames() {
		if l, ok := layers[name]; ok {
			m.linears[name] = l
			continue
		}
		m.linears[name] = &DenseLinear{Weight: ps.Get(name + ".weight"), Bias: ps.Get(name + ".bias")}
	}
	return m, nil
}

// HFLayout returns how a Hugging Face file stores the parameter called name
// of galleon's shape: its shape there, and whether that is the transpose of
// galleon's (the Llama family's linear weights and an untied lm_head are
// [out, in] there, [in, out] in galleon). Writers of other Hugging Face
// style files (quant's int8 directories) use it.
func (c Config) HFLayout(name string, shape []int) (stored []int64, transposed bool) {
	return c.hfShape(name, shape), c.hfTranspose(name)
}

// WriteDirAtomic builds a directory beside dir holding files (each written
// by its function and synced) and renames it to dir: readers see the old
// directory or the complete new one, and on an error nothing is left
// behind. An existing dir is replaced. SavePretrained writes through it;
// so do other writers of model directories (quant's int8 directories).
func WriteDirAtomic(dir string, files map[string]func(io.Writer) error) error {
	for name := range files {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
			return fmt.Errorf("model: WriteDirAtomic: %q is not a file name", name)
		}
	}
	if err := writeDirAtomic(dir, files); err != nil {
		return fmt.Errorf("model: writing %s: %w", dir, err)
	}
	return nil
}

// HFSideFiles are the files of a Hugging Face model directory besides the
// weights and config.json that a directory derived from it (merged,
// quantized) needs to be used as it was: the tokenizer in its Hugging Face
// forms, the chat template and the generation defaults. Writers copy the
// ones present.
var HFSideFiles = []string{
	"generation_config.json",
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
	"tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
}
