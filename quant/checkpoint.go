package quant

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
)

// ErrCheckpoint is wrapped by every error about an int8 checkpoint's content.
var ErrCheckpoint = errors.New("quant: bad int8 checkpoint")

// Checkpoint format: safetensors with metadata format=galleon-int8, config (the
// model's JSON configuration) and quant (the Config as JSON). A quantized
// linear layer L stores L.weight as I8 [out, in] (per output channel, the
// transpose of the float checkpoint's Conv1D [in, out]), L.weight_scale as F32
// [out] and L.bias as F32; a quantized embedding E stores E.weight as I8
// [rows, C] and E.weight_scale as F32 [rows]; every other parameter is F32 as
// in the float checkpoint. A tied output head run on the int8 GEMM
// (Config.Head) stores nothing of its own: the configuration stays tied and
// the head is rebuilt from the token embedding's int8 table (or its float
// table quantized per row). Files without the quant key int8_head have a
// float32 tied head, as before it existed.
const (
	formatInt8      = "galleon-int8"
	metaFormat      = "format"
	metaConfig      = "config"
	metaQuant       = "quant"
	scaleSuffix     = "_scale"
	maxCheckpointSz = 1 << 40
)

// Save writes the int8 checkpoint to path atomically. It also works after
// q.ReleaseReplaced (model.Model's), which frees the float32 copies of the
// quantized layers: their tensors come from the int8 layers.
func (q *Model) Save(path string) error {
	arch := q.Model.Config
	tiedHead := q.Config.tiedHead()
	if tiedHead {
		arch.TiedEmbeddings = true // the head is the token embedding's table
	}
	cfg, err := json.Marshal(arch)
	if err != nil {
		return fmt.Errorf("quant: save: %w", err)
	}
	qc, err := json.Marshal(q.Config)
	if err != nil {
		return fmt.Errorf("quant: save: %w", err)
	}
	i8 := map[string]*Rows{}
	for name, l := range q.Linears {
		if !(tiedHead && name == model.NameHead) {
			i8[name+".weight"] = l.Weight
		}
	}
	for name, r := range q.Embeddings {
		i8[name] = r
	}
	var tensors []safetensors.Tensor
	written := map[string]bool{}
	for _, p := range q.Model.Weights.Params {
		if tiedHead && trimSuffix(p.Name, ".weight") == model.NameHead {
			continue
		}
		written[p.Name] = true
		if r, ok := i8[p.Name]; ok {
			tensors = append(tensors,
				safetensors.I8Tensor(p.Name, []int64{int64(r.Rows), int64(r.Cols)}, r.Data),
				safetensors.F32Tensor(p.Name+scaleSuffix, []int64{int64(r.Rows)}, r.Scale))
			continue
		}
		data := p.Data
		if l, ok := q.Linears[trimSuffix(p.Name, ".bias")]; ok && l.Bias != nil {
			data = l.Bias
		}
		shape := make([]int64, len(p.Shape))
		for i, d := range p.Shape {
			shape[i] = int64(d)
		}
		tensors = append(tensors, safetensors.F32Tensor(p.Name, shape, data))
	}
	// Layers whose float32 parameters were released: the int8 weight, and
	// the layer's bias (zeros for a module that has a bias parameter but
	// whose layer has none).
	names := make([]string, 0, len(q.Linears))
	for name := range q.Linears {
		if !(tiedHead && name == model.NameHead) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		l := q.Linears[name]
		if w := name + ".weight"; !written[w] {
			tensors = append(tensors,
				safetensors.I8Tensor(w, []int64{int64(l.Out), int64(l.In)}, l.Weight.Data),
				safetensors.F32Tensor(w+scaleSuffix, []int64{int64(l.Out)}, l.Weight.Scale))
		}
		if b := name + ".bias"; !written[b] && arch.LinearHasBias(name) {
			bias := l.Bias
			if bias == nil {
				bias = make([]float32, l.Out)
			}
			tensors = append(tensors, safetensors.F32Tensor(b, []int64{int64(l.Out)}, bias))
		}
	}
	meta := map[string]string{metaFormat: formatInt8, metaConfig: string(cfg), metaQuant: string(qc)}
	if err := safetensors.WriteFile(path, tensors, meta); err != nil {
		return fmt.Errorf("quant: save %s: %w", path, err)
	}
	return nil
}

func trimSuffix(s, suf string) string {
	if len(s) > len(suf) && s[len(s)-len(suf):] == suf {
		return s[:len(s)-len(suf)]
	}
	return ""
}

// Load reads an int8 checkpoint written by Save. The file is treated as
// hostile: besides the safetensors reader's structural checks, the
// configuration must validate and fit the file's size before anything is
// allocated, every tensor must be expected, of the expected dtype and shape,
// present exactly once, int8 values in [−127, 127], scales positive and
// finite, and float values finite.
func Load(path string) (*Model, error) {
	bad := func(format string, args ...any) (*Model, error) {
		return nil, fmt.Errorf("quant: load %s: %w: "+format, append([]any{path, ErrCheckpoint}, args...)...)
	}
	// Open checks the header against the file's size (padding, holes and
	// overlaps are refused) without reading tensor data; the data is read
	// only after the configuration bounds it.
	r, err := safetensors.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("quant: load: %w", err)
		}
		return bad("%w", err)
	}
	defer r.Close()
	size := r.DataSize()
	if r.Metadata[metaFormat] != formatInt8 {
		return bad("format %q, want %q", r.Metadata[metaFormat], formatInt8)
	}
	var cfg model.Config
	if err := json.Unmarshal([]byte(r.Metadata[metaConfig]), &cfg); err != nil {
		return bad("config: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		return bad("%v", err)
	}
	var qc Config
	if err := json.Unmarshal([]byte(r.Metadata[metaQuant]), &qc); err != nil {
		return bad("quant config: %v", err)
	}
	// The linear weights alone take a byte each: a configuration the file
	// cannot hold is rejected before the model is allocated.
	C, L, V, T := int64(cfg.DModel), int64(cfg.Layers), int64(cfg.Vocab), int64(cfg.SeqLen)
	need := L*C*(int64(cfg.QKVWidth())+C+2*int64(cfg.MLPRatio)*C) + V*C + T*C
	if C <= 0 || L < 0 || need <= 0 || need > maxCheckpointSz || need > size {
		return bad("config needs at least %d bytes of tensors, the file has %d", need, size)
	}
	// No tensor is larger than its float32 form, and each int8 matrix
	// adds one float32 scale per row, so the data is at most 8 bytes per
	// parameter: more is not this configuration's checkpoint.
	if pc, err := cfg.ParamCount(); err != nil || size > 8*pc {
		return bad("the file holds %d bytes of tensors, more than a checkpoint of this configuration can (%d parameters)", size, pc)
	}
	f, err := r.ReadAll()
	if err != nil {
		return bad("%w", err)
	}
	switch qc.Act {
	case ActFloat, ActDynamic, ActStatic:
	default:
		return bad("activation mode %d", qc.Act)
	}
	if !(qc.Threshold >= 0) || math.IsInf(float64(qc.Threshold), 0) {
		return bad("threshold %v", qc.Threshold)
	}
	names := cfg.LinearNames()
	if len(qc.Layers) == 0 { // as Quantize: all but the head, unless Head
		for _, name := range names {
			if name != model.NameHead || qc.Head {
				qc.Layers = append(qc.Layers, name)
			}
		}
	}
	isLinear := map[string]bool{}
	for _, name := range qc.Layers {
		if !slices.Contains(names, name) || isLinear[name] {
			return bad("layer %q", name)
		}
		isLinear[name] = true
	}
	tiedHead := cfg.TiedEmbeddings && qc.Head
	if !cfg.TiedEmbeddings {
		if qc.Head && !isLinear[model.NameHead] {
			return bad("int8 head without layer %q", model.NameHead)
		}
		qc.Head = isLinear[model.NameHead] // files from before the key
	}
	arch := cfg
	arch.TiedEmbeddings = !tiedHead && cfg.TiedEmbeddings
	m, err := model.New(arch, 0)
	if err != nil {
		return bad("%v", err)
	}
	q := &Model{Model: m, Config: qc, Linears: map[string]*Linear{}, Embeddings: map[string]*Rows{}}
	quantized := map[string]bool{}
	for name := range isLinear {
		quantized[name+".weight"] = true
	}
	if qc.Embeddings {
		for _, name := range cfg.EmbeddingNames() {
			quantized[name] = true
		}
	}
	seen := map[string]bool{}
	get := func(name string) (safetensors.Tensor, bool) {
		seen[name] = true
		return f.Tensor(name)
	}
	rows := map[string]*Rows{}
	for _, p := range m.Weights.Params {
		if tiedHead && p.Name == model.NameHead+".weight" {
			continue // the token embedding's table, below
		}
		if quantized[p.Name] {
			t, ok := get(p.Name)
			ts, ok2 := get(p.Name + scaleSuffix)
			if !ok || !ok2 {
				return bad("missing %q or its scale", p.Name)
			}
			out, in := p.Shape[0], p.Shape[1] // an embedding: per row
			if isLinear[trimSuffix(p.Name, ".weight")] {
				out, in = p.Shape[1], p.Shape[0] // [in, out] in the model
			}
			if t.DType != safetensors.I8 || !slices.Equal(t.Shape, []int64{int64(out), int64(in)}) {
				return bad("tensor %q is %v %v, want I8 [%d %d]", p.Name, t.DType, t.Shape, out, in)
			}
			if ts.DType != safetensors.F32 || !slices.Equal(ts.Shape, []int64{int64(out)}) {
				return bad("tensor %q is %v %v, want F32 [%d]", p.Name+scaleSuffix, ts.DType, ts.Shape, out)
			}
			d, err1 := t.Int8s()
			s, err2 := ts.Float32s()
			if err1 != nil || err2 != nil {
				return bad("tensor %q: %v %v", p.Name, err1, err2)
			}
			r := &Rows{Rows: out, Cols: in, Data: d, Scale: s}
			if err := r.validate(); err != nil {
				return bad("tensor %q: %v", p.Name, err)
			}
			rows[p.Name] = r
			continue
		}
		t, ok := get(p.Name)
		if !ok {
			return bad("missing tensor %q", p.Name)
		}
		if t.DType != safetensors.F32 || len(t.Shape) != len(p.Shape) {
			return bad("tensor %q is %v %v, want F32 %v", p.Name, t.DType, t.Shape, p.Shape)
		}
		for i, d := range p.Shape {
			if t.Shape[i] != int64(d) {
				return bad("tensor %q has shape %v, want %v", p.Name, t.Shape, p.Shape)
			}
		}
		v, err := t.Float32s()
		if err != nil || len(v) != len(p.Data) {
			return bad("tensor %q: %v", p.Name, err)
		}
		if err := checkFinite(p.Name, v); err != nil {
			return bad("%v", err)
		}
		copy(p.Data, v)
	}
	for _, t := range f.Tensors {
		if !seen[t.Name] {
			return bad("unexpected tensor %q", t.Name)
		}
	}
	for _, name := range qc.Layers {
		opts := LinearOptions{Act: qc.Act, Threshold: qc.Threshold}
		if qc.Act == ActStatic {
			opts.ActScale = qc.ActScales[name]
		}
		if name == model.NameHead {
			opts = headOptions(qc)
		}
		var bias []float32
		if p := m.Weights.Get(name + ".bias"); p != nil {
			bias = p.Data
		}
		l, err := NewLinearFromRows(rows[name+".weight"], bias, opts)
		if err != nil {
			return bad("layer %q: %v", name, err)
		}
		// The float weight is not in the file: keep the dequantized one in
		// the model's table for anything reading parameters directly.
		if err := l.Weight.DequantizeTransposed(m.Weights.Get(name + ".weight").Data); err != nil {
			return bad("layer %q: %v", name, err)
		}
		if err := m.SetLinear(name, l); err != nil {
			return bad("%v", err)
		}
		q.Linears[name] = l
	}
	if qc.Embeddings {
		for _, name := range cfg.EmbeddingNames() {
			r := rows[name]
			if err := r.Dequantize(m.Weights.Get(name).Data); err != nil {
				return bad("%v", err)
			}
			q.Embeddings[name] = r
		}
	}
	if tiedHead {
		if err := q.setTiedHead(); err != nil {
			return bad("%v", err)
		}
	}
	return q, nil
}
