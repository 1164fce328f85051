package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// Hugging Face file names.
const (
	hfConfigFile  = "config.json"
	hfWeightsFile = "model.safetensors"
	hfIndexFile   = "model.safetensors.index.json"
)

// DefaultMaxShardSize is the shard size above which SavePretrained splits
// the weights into model-0000K-of-0000N.safetensors files with an index:
// transformers' default of 5 GB.
const DefaultMaxShardSize int64 = 5_000_000_000

// hfTranspose reports whether the parameter name is stored [out, in] in a
// Hugging Face file while galleon holds it [in, out]: every linear weight of
// the Llama family (torch.nn.Linear), and an untied lm_head of either
// family. GPT-2's Conv1D weights are [in, out] in both.
func (c Config) hfTranspose(name string) bool {
	if name == NameHead+".weight" {
		return true
	}
	if c.FamilyName() != FamilyLlama || !strings.HasSuffix(name, ".weight") {
		return false
	}
	// The family's block linears are its only "…_proj" modules.
	return strings.HasPrefix(name, "model.layers.") && strings.HasSuffix(name, "_proj.weight")
}

// hfCanonical maps a tensor name of a Hugging Face file to galleon's name,
// or "" for a buffer that carries no weights (GPT-2's attn.bias and
// attn.masked_bias, older Llama's rotary_emb.inv_freq, and lm_head when
// the head is tied).
func (c Config) hfCanonical(name string) string {
	switch {
	case c.TiedEmbeddings && name == NameHead+".weight":
		return ""
	case strings.HasSuffix(name, ".rotary_emb.inv_freq"):
		return ""
	}
	if c.FamilyName() != FamilyGPT2 {
		return name
	}
	if strings.HasSuffix(name, ".attn.bias") || strings.HasSuffix(name, ".attn.masked_bias") {
		return ""
	}
	if name == NameHead+".weight" || strings.HasPrefix(name, "transformer.") {
		return name
	}
	// openai-community/gpt2 stores the base model's names, without the
	// LM-head class's "transformer." prefix.
	return "transformer." + name
}

// hfShape is the shape of parameter name (galleon's shape) as a Hugging
// Face file stores it.
func (c Config) hfShape(name string, shape []int) []int64 {
	s := shape64(shape)
	if c.hfTranspose(name) {
		s[0], s[1] = s[1], s[0]
	}
	return s
}

// ReadPretrainedConfig reads only a Hugging Face model directory's
// config.json and returns the Config LoadPretrained would build the model
// with, for callers that size a run (batch, sequence length, memory)
// before paying for the weights. It applies the same checks as
// LoadPretrained: an unsupported model_type or an inconsistent config is
// an error wrapping ErrConfig.
func ReadPretrainedConfig(dir string) (Config, error) {
	cdata, err := readSmallFile(filepath.Join(dir, hfConfigFile), 1<<20)
	if err != nil {
		return Config{}, err
	}
	cfg, _, err := parseHFConfig(cdata)
	return cfg, err
}

// LoadPretrained reads a Hugging Face model directory: config.json
// (model_type gpt2, llama, mistral or qwen2) and the weights in
// model.safetensors or in the shards model.safetensors.index.json lists.
// F32, F16 and BF16 weights are widened exactly to float32; the model
// remembers the dtype so that SavePretrained writes it back the same way.
//
// GPT-2 names are accepted with or without the "transformer." prefix and
// its attn.bias / attn.masked_bias buffers are ignored; Llama-family linear
// weights, stored [out, in], are transposed into galleon's [in, out].
//
// Every file is treated as hostile: each shard's header is checked against
// the file before anything else is read, every tensor must be expected, of
// the expected shape and present once, and every expected tensor must be
// present. The weights are read tensor by tensor in chunks of a few MiB
// straight into the model's float32 buffer, so loading never holds a
// second copy of them. Options (LoadOption) choose another weights file or
// hand the linear layers to a loader of their own, such as quant's int8
// load or KeepBF16, which then never allocate their float32 weights.
func LoadPretrained(dir string, opts ...LoadOption) (*Model, error) {
	var o loadOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	cdata, err := readSmallFile(filepath.Join(dir, hfConfigFile), 1<<20)
	if err != nil {
		return nil, err
	}
	cfg, info, err := parseHFConfig(cdata)
	if err != nil {
		return nil, err
	}
	files, err := hfShards(dir, o.weightsFile)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// Every tensor of every shard: once, expected, floating point.
	where := map[string]*stEntry{}
	from := map[string]*stFile{}
	for _, f := range files {
		for name, e := range f.entries {
			canon := cfg.hfCanonical(name)
			if canon == "" {
				continue
			}
			if prev, dup := where[canon]; dup {
				return nil, fmt.Errorf("%w: tensor %q appears twice (%s in %s, %s in %s)", ErrCheckpoint, canon, prev.name, from[canon].path, name, f.path)
			}
			where[canon], from[canon] = e, f
		}
	}
	if o.keepBF16 {
		if o.load != nil {
			return nil, fmt.Errorf("model: LoadPretrained: KeepBF16 and WithLinearLoader cannot be combined")
		}
		o.takes = func(module string) bool {
			e := where[module+".weight"]
			return e != nil && e.dtype == safetensors.BF16
		}
		o.load = loadBF16Linear
	}
	keepTokens := o.keepBF16 && cfg.keepsTokensBF16(where)
	// Shapes are checked before the model is allocated: the files, not
	// config.json alone, must account for every byte of it.
	specs := cfg.paramSpecs()
	expected := map[string]bool{}
	byName := map[string]ParamSpec{}
	for _, s := range specs {
		expected[s.Name], byName[s.Name] = true, s
		e := where[s.Name]
		if e == nil {
			return nil, fmt.Errorf("%w: %s: tensor %q is missing (a %s model with this config.json has it)", ErrCheckpoint, dir, s.Name, cfg.HFModelType())
		}
		if module, ok := strings.CutSuffix(s.Name, ".weight"); ok && o.takes != nil && o.takes(module) && slices.Contains(cfg.LinearNames(), module) {
			extra, err := cfg.checkTaken(module, s, where, from)
			if err != nil {
				return nil, err
			}
			if extra != "" {
				expected[extra] = true
			}
			continue
		}
		if want := cfg.hfShape(s.Name, s.Shape); !slices.Equal(e.shape, want) {
			return nil, fmt.Errorf("%w: %s: tensor %q has shape %v, want %v", ErrCheckpoint, from[s.Name].path, e.name, e.shape, want)
		}
	}
	for name, e := range where {
		if !expected[name] {
			return nil, fmt.Errorf("%w: %s: unexpected tensor %q (not part of a %s model with this config.json)", ErrCheckpoint, from[name].path, e.name, cfg.HFModelType())
		}
	}
	var buf []byte
	var m *Model
	dtypes := map[safetensors.DType]bool{}
	if o.load != nil {
		layers, err := cfg.loadTaken(o, byName, where, from, &buf)
		if err != nil {
			return nil, err
		}
		var tokens []uint16
		if keepTokens {
			name := cfg.TokenEmbeddingName()
			tokens = make([]uint16, cfg.Vocab*cfg.DModel)
			if err := from[name].readBF16(where[name], tokens, &buf); err != nil {
				return nil, err
			}
			dtypes[safetensors.BF16] = true
		}
		m, err = newWithLayers(cfg, layers, tokens)
		if err != nil {
			return nil, err
		}
	} else if m, err = NewZeroed(cfg); err != nil {
		return nil, err
	}
	for _, p := range m.Weights.Params {
		e, f := where[p.Name], from[p.Name]
		cols := 0
		if cfg.hfTranspose(p.Name) {
			cols = int(e.shape[1])
		}
		if err := f.readFloats(e, p.Data, cols, &buf); err != nil {
			return nil, err
		}
		dtypes[e.dtype] = true
	}
	if len(dtypes) == 1 {
		for d := range dtypes {
			info.dtype = torchDType(d)
		}
	}
	m.hf = info
	return m, nil
}

// torchDType names a floating-point safetensors dtype as torch does.
func torchDType(d safetensors.DType) string {
	switch d {
	case safetensors.BF16:
		return "bfloat16"
	case safetensors.F16:
		return "float16"
	}
	return "float32"
}

// stDType is the inverse of torchDType.
func stDType(name string) (safetensors.DType, error) {
	switch name {
	case "float32", "":
		return safetensors.F32, nil
	case "float16":
		return safetensors.F16, nil
	case "bfloat16":
		return safetensors.BF16, nil
	}
	return 0, fmt.Errorf("model: dtype %q: %w", name, errNoFloat)
}

// readSmallFile reads a JSON file of at most limit bytes; anything but a
// regular file (a FIFO would block the open) is refused.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, _, err := safetensors.OpenRegular(path)
	if errors.Is(err, safetensors.ErrNotRegular) {
		return nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCheckpoint, path, limit)
	}
	return data, nil
}

// hfShards opens the weight files of dir: weightsFile if not empty,
// model.safetensors, or every shard the index lists (each checked: a plain file name in dir, holding exactly
// the tensors the index maps to it).
func hfShards(dir, weightsFile string) ([]*stFile, error) {
	if weightsFile != "" {
		f, err := openST(filepath.Join(dir, weightsFile))
		if err != nil {
			return nil, err
		}
		return []*stFile{f}, nil
	}
	single := filepath.Join(dir, hfWeightsFile)
	if _, err := os.Stat(single); err == nil {
		f, err := openST(single)
		if err != nil {
			return nil, err
		}
		return []*stFile{f}, nil
	}
	idxPath := filepath.Join(dir, hfIndexFile)
	if _, err := os.Stat(idxPath); err != nil {
		for _, pt := range []string{"pytorch_model.bin", "pytorch_model.bin.index.json"} {
			if _, err := os.Stat(filepath.Join(dir, pt)); err == nil {
				return nil, fmt.Errorf("%w: %s has only %s (PyTorch pickle, which galleon does not unpickle); convert it to safetensors, e.g. save_pretrained(dir, safe_serialization=True) in transformers", ErrCheckpoint, dir, pt)
			}
		}
		return nil, fmt.Errorf("%w: %s has neither %s nor %s", ErrCheckpoint, dir, hfWeightsFile, hfIndexFile)
	}
	data, err := readSmallFile(idxPath, 64<<20)
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, idxPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%w: %s has no weight_map", ErrCheckpoint, idxPath)
	}
	byFile := map[string][]string{}
	for name, file := range idx.WeightMap {
		if file == "" || file != filepath.Base(file) || file == "." || file == ".." || strings.ContainsAny(file, `/\`) {
			return nil, fmt.Errorf("%w: %s maps %q to %q, not a file name in the directory", ErrCheckpoint, idxPath, name, file)
		}
		byFile[file] = append(byFile[file], name)
	}
	names := make([]string, 0, len(byFile))
	for f := range byFile {
		names = append(names, f)
	}
	sort.Strings(names)
	var files []*stFile
	for _, name := range names {
		f, err := openST(filepath.Join(dir, name))
		if err != nil {
			for _, o := range files {
				o.Close()
			}
			return nil, err
		}
		files = append(files, f)
		listed := byFile[name]
		for _, t := range listed {
			if f.entries[t] == nil {
				err = fmt.Errorf("%w: %s maps %q to %s, which does not hold it", ErrCheckpoint, idxPath, t, name)
			}
		}
		if err == nil && len(listed) != len(f.entries) {
			err = fmt.Errorf("%w: %s holds %d tensors, the index maps %d to it", ErrCheckpoint, f.path, len(f.entries), len(listed))
		}
		if err != nil {
			for _, o := range files {
				o.Close()
			}
			return nil, err
		}
	}
	return files, nil
}

// SaveOption changes what SavePretrained writes.
type SaveOption func(*saveOptions) error

type saveOptions struct {
	dtype    string
	maxShard int64
	sideFrom string // WithSideFiles
}

// WithSideFiles also writes into the directory the HFSideFiles present in
// the Hugging Face directory from (the tokenizer, chat template and
// generation defaults of the model a merged one derives from), copied
// unchanged inside the same atomic write as the weights: the new directory
// appears with them or not at all. A side file that is present but not a
// regular file is an error.
func WithSideFiles(from string) SaveOption {
	return func(o *saveOptions) error {
		if from == "" {
			return errors.New("model: WithSideFiles: empty directory")
		}
		o.sideFrom = from
		return nil
	}
}

// CopyFilesFrom adds to files, for WriteDirAtomic, a CopyFile of each of
// names that exists in the directory from; absent ones are skipped.
func CopyFilesFrom(files map[string]func(io.Writer) error, from string, names []string) {
	for _, name := range names {
		src := filepath.Join(from, name)
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		files[name] = CopyFile(src)
	}
}

// CopyFile returns a writer function for WriteDirAtomic that copies the
// regular file src (refusing a FIFO, device or directory before opening it,
// so that it never blocks).
func CopyFile(src string) func(io.Writer) error {
	return func(w io.Writer) error {
		f, _, err := safetensors.OpenRegular(src)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	}
}

// WithDType saves the weights as "float32", "float16" or "bfloat16"
// (rounded to nearest, ties to even) instead of the dtype the model was
// loaded in (float32 for a model galleon created).
func WithDType(dtype string) SaveOption {
	return func(o *saveOptions) error {
		if _, err := stDType(dtype); err != nil {
			return err
		}
		o.dtype = dtype
		return nil
	}
}

// WithMaxShardSize splits the weights into shards of at most n bytes (a
// tensor larger than n gets a shard of its own), listed in
// model.safetensors.index.json. The default is DefaultMaxShardSize.
func WithMaxShardSize(n int64) SaveOption {
	return func(o *saveOptions) error {
		if n <= 0 {
			return fmt.Errorf("model: max shard size must be positive, got %d", n)
		}
		o.maxShard = n
		return nil
	}
}

// SavePretrained writes the model as a Hugging Face directory that
// transformers' from_pretrained loads: config.json (architectures,
// model_type, torch_dtype and the family's keys, plus the keys of a loaded
// config.json that galleon does not interpret) and model.safetensors, or
// shards with model.safetensors.index.json above the shard size. Names and
// layouts are Hugging Face's (Llama-family linears [out, in]; GPT-2 with
// the "transformer." prefix, tied lm_head omitted), and the dtype is the one
// the model was loaded in unless WithDType says otherwise.
//
// The directory is built beside dir and renamed into place: readers see
// the old directory or the complete new one. Adapters or quantized layers
// set with SetLinear are not saved: merge them into the weights first.
func (m *Model) SavePretrained(dir string, opts ...SaveOption) (err error) {
	o := saveOptions{dtype: "float32", maxShard: DefaultMaxShardSize}
	if m.hf != nil {
		o.dtype = m.hf.dtype
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return err
		}
	}
	dt, err := stDType(o.dtype)
	if err != nil {
		return err
	}
	c := m.Config
	kept := m.bf16Tensors()
	if have, want := len(m.Weights.Params)+len(kept), len(c.paramSpecs()); have != want {
		return fmt.Errorf("model: SavePretrained %s: %d of the configuration's %d parameters are held (ReleaseReplaced freed the others)", dir, have, want)
	}
	var extra map[string]json.RawMessage
	if m.hf != nil {
		extra = m.hf.extra
	}
	cjson, err := hfConfigJSON(c, o.dtype, extra)
	if err != nil {
		return err
	}
	// Shards in parameter order, each up to maxShard bytes.
	var shards [][]stOut
	var size, total int64
	for _, spec := range c.paramSpecs() {
		t := stOut{name: spec.Name, shape: c.hfShape(spec.Name, spec.Shape)}
		if p := m.Weights.Get(spec.Name); p != nil {
			t.src = p.Data
			if c.hfTranspose(p.Name) {
				t.cols = int(t.shape[1])
			}
		} else {
			k, ok := kept[spec.Name] // a bf16 layer's tensor, in the file's layout
			if !ok {
				return fmt.Errorf("model: SavePretrained %s: parameter %q is held neither in float32 nor by a bf16 layer", dir, spec.Name)
			}
			t, t.shape = k, c.hfShape(spec.Name, spec.Shape)
		}
		n := int64(t.len()) * dt.Size()
		if len(shards) == 0 || size > 0 && size+n > o.maxShard {
			shards = append(shards, nil)
			size = 0
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], t)
		size += n
		total += n
	}
	files := map[string]func(io.Writer) error{
		hfConfigFile: func(w io.Writer) error { _, err := w.Write(cjson); return err },
	}
	if len(shards) == 1 {
		files[hfWeightsFile] = func(w io.Writer) error { return writeST(w, shards[0], dt) }
	} else {
		weightMap := map[string]string{}
		for i, sh := range shards {
			name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
			for _, t := range sh {
				weightMap[t.name] = name
			}
			files[name] = func(w io.Writer) error { return writeST(w, sh, dt) }
		}
		idx, err := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}, "", "  ")
		if err != nil {
			return fmt.Errorf("model: %w", err)
		}
		files[hfIndexFile] = func(w io.Writer) error { _, err := w.Write(append(idx, '\n')); return err }
	}
	if o.sideFrom != "" {
		CopyFilesFrom(files, o.sideFrom, HFSideFiles)
	}
	if err := writeDirAtomic(dir, files); err != nil {
		return fmt.Errorf("model: SavePretrained %s: %w", dir, err)
	}
	return nil
}

// writeDirAtomic builds a directory beside dir holding files (each written
// by its function and synced), then renames it to dir. An existing dir is
// moved aside first and removed once the new one is in place; if the swap
// fails it is moved back.
func writeDirAtomic(dir string, files map[string]func(io.Writer) error) (err error) {
	dir = filepath.Clean(dir)
	parent, base := filepath.Split(dir)
	if parent == "" {
		parent = "."
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	for name, write := range files {
		f, err := os.OpenFile(filepath.Join(tmp, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	var old string
	if fi, err := os.Lstat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		old = filepath.Join(parent, "."+base+".old-"+filepath.Base(tmp)[len(base)+6:])
		if err := os.Rename(dir, old); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			os.Rename(old, dir)
		}
		return err
	}
	if old != "" {
		os.RemoveAll(old)
	}
	return syncDir(parent)
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
