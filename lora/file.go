package lora

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// File names of an adapter directory, as Hugging Face PEFT writes them.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// tensorPrefix is what PEFT puts before module names in adapter files (the
// PeftModel's base_model.model), with the adapter name left out.
const tensorPrefix = "base_model.model."

// maxConfigBytes bounds adapter_config.json: PEFT's is about 1 KB.
const maxConfigBytes = 1 << 20

// peftConfig is adapter_config.json with PEFT's field names. Fields PEFT
// writes that galleon does not use are written with PEFT's defaults.
type peftConfig struct {
	PeftType             string          `json:"peft_type"`
	TaskType             string          `json:"task_type"`
	BaseModelNameOrPath  string          `json:"base_model_name_or_path"`
	Revision             *string         `json:"revision"`
	InferenceMode        bool            `json:"inference_mode"`
	R                    int             `json:"r"`
	LoraAlpha            float64         `json:"lora_alpha"`
	LoraDropout          float64         `json:"lora_dropout"`
	TargetModules        json.RawMessage `json:"target_modules"`
	ExcludeModules       json.RawMessage `json:"exclude_modules"`
	Bias                 string          `json:"bias"`
	FanInFanOut          bool            `json:"fan_in_fan_out"`
	UseRSLoRA            bool            `json:"use_rslora"`
	UseDoRA              bool            `json:"use_dora"`
	InitLoraWeights      json.RawMessage `json:"init_lora_weights"`
	ModulesToSave        json.RawMessage `json:"modules_to_save"`
	LayersToTransform    json.RawMessage `json:"layers_to_transform"`
	LayersPattern        json.RawMessage `json:"layers_pattern"`
	RankPattern          map[string]any  `json:"rank_pattern"`
	AlphaPattern         map[string]any  `json:"alpha_pattern"`
	AutoMapping          json.RawMessage `json:"auto_mapping"`
	LoftqConfig          map[string]any  `json:"loftq_config"`
	MegatronConfig       json.RawMessage `json:"megatron_config"`
	MegatronCore         string          `json:"megatron_core"`
	LayerReplication     json.RawMessage `json:"layer_replication"`
	GalleonSeed          *uint64         `json:"galleon_seed,omitempty"`
	GalleonAdapterFormat string          `json:"galleon_format,omitempty"`
}

func isNull(m json.RawMessage) bool {
	s := strings.TrimSpace(string(m))
	return s == "" || s == "null"
}

// Save writes the adapter to dir as PEFT does: adapter_config.json and
// adapter_model.safetensors holding only the adapter's tensors, named
// base_model.model.<module>.lora_A.weight ([r, in]) and .lora_B.weight
// ([out, r]). A merged adapter saves the same matrices.
func (a *Adapter) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	cfg := a.Config
	targets, _ := json.Marshal(sortedCopy(a.Modules))
	init := json.RawMessage("true")
	if cfg.Init == InitGaussian {
		init = json.RawMessage(`"gaussian"`)
	}
	seed := cfg.Seed
	pc := peftConfig{
		PeftType: "LORA", TaskType: "CAUSAL_LM", BaseModelNameOrPath: cfg.BaseModel,
		InferenceMode: true, R: cfg.R, LoraAlpha: cfg.Alpha, LoraDropout: cfg.Dropout,
		TargetModules: targets, ExcludeModules: json.RawMessage("null"),
		Bias: "none", FanInFanOut: true, UseRSLoRA: cfg.UseRSLoRA, InitLoraWeights: init,
		ModulesToSave: json.RawMessage("null"), LayersToTransform: json.RawMessage("null"),
		LayersPattern: json.RawMessage("null"), RankPattern: map[string]any{}, AlphaPattern: map[string]any{},
		AutoMapping: json.RawMessage("null"), LoftqConfig: map[string]any{}, MegatronConfig: json.RawMessage("null"),
		MegatronCore: "megatron.core", LayerReplication: json.RawMessage("null"), GalleonSeed: &seed,
	}
	js, err := json.MarshalIndent(pc, "", "  ")
	if err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	var tensors []safetensors.Tensor
	for _, mod := range a.Modules {
		for _, p := range []struct {
			which string
			shape []int
			data  []float32
		}{{"lora_A", a.A(mod).Shape, a.A(mod).Data}, {"lora_B", a.B(mod).Shape, a.B(mod).Data}} {
			tensors = append(tensors, safetensors.F32Tensor(tensorName(mod, p.which), []int64{int64(p.shape[0]), int64(p.shape[1])}, p.data))
		}
	}
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, ConfigFile), append(js, '\n')); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	return nil
}

func tensorName(module, which string) string { return tensorPrefix + module + "." + which + ".weight" }

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err = f.Chmod(0o644); err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// ReadConfig reads dir's adapter_config.json into a Config. It accepts what
// PEFT writes for a plain LoRA adapter of a causal LM and refuses, with a
// clear error, the features galleon does not implement (DoRA, per-module
// rank or alpha patterns, modules_to_save, trained biases, layer selection).
func ReadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("lora: %s: %w: "+format, append([]any{path, ErrAdapterFile}, args...)...)
	}
	// Stat before opening (and open non-blocking): a FIFO must not hang.
	f, _, err := safetensors.OpenRegular(path)
	if err != nil {
		return Config{}, fmt.Errorf("lora: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return Config{}, fmt.Errorf("lora: %s: %w", path, err)
	}
	if len(raw) > maxConfigBytes {
		return bad("larger than %d bytes", maxConfigBytes)
	}
	var pc peftConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&pc); err != nil {
		return bad("%v", err)
	}
	switch {
	case pc.PeftType != "LORA":
		return bad("peft_type %q, want \"LORA\"", pc.PeftType)
	case pc.TaskType != "" && pc.TaskType != "CAUSAL_LM":
		return bad("task_type %q, want \"CAUSAL_LM\"", pc.TaskType)
	case pc.Bias != "" && pc.Bias != "none":
		return bad("bias %q: only \"none\" is supported", pc.Bias)
	case pc.UseDoRA:
		return bad("use_dora is not supported")
	case len(pc.RankPattern) > 0 || len(pc.AlphaPattern) > 0:
		return bad("rank_pattern/alpha_pattern are not supported")
	case !isNull(pc.ModulesToSave):
		return bad("modules_to_save is not supported")
	case !isNull(pc.LayersToTransform) || !isNull(pc.LayersPattern):
		return bad("layers_to_transform/layers_pattern are not supported")
	case !isNull(pc.LayerReplication):
		return bad("layer_replication is not supported")
	}
	cfg := Config{R: pc.R, Alpha: pc.LoraAlpha, Dropout: pc.LoraDropout, UseRSLoRA: pc.UseRSLoRA, BaseModel: pc.BaseModelNameOrPath, Init: InitKaiming}
	if pc.GalleonSeed != nil {
		cfg.Seed = *pc.GalleonSeed
	}
	if cfg.TargetModules, err = moduleList(pc.TargetModules); err != nil {
		return bad("target_modules: %v", err)
	}
	if cfg.ExcludeModules, err = moduleList(pc.ExcludeModules); err != nil {
		return bad("exclude_modules: %v", err)
	}
	switch s := strings.TrimSpace(string(pc.InitLoraWeights)); s {
	case "", "null", "true", "false": // false: PEFT's random-B init for tests; B is in the file anyway
	case `"gaussian"`:
		cfg.Init = InitGaussian
	default:
		if len(s) > 64 {
			s = s[:64] + "…"
		}
		return bad("init_lora_weights %s is not supported", s)
	}
	if err := cfg.Validate(); err != nil {
		return bad("%v", err)
	}
	return cfg, nil
}

// moduleList reads target_modules/exclude_modules: a list of names, or a
// string that PEFT treats as a regular expression matching whole names.
func moduleList(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var re string
	if err := json.Unmarshal(raw, &re); err != nil {
		return nil, fmt.Errorf("want a list of names or a pattern")
	}
	if re == AllLinear {
		return []string{AllLinear}, nil
	}
	return []string{"re:" + re}, nil
}

// LoadAdapter reads the adapter in dir (as written by Adapter.Save or by
// PEFT for this model) and adds it to lm under name; it becomes active if it
// is the first adapter. The files are treated as hostile: the config must be
// small and valid, its targets must name linear layers of this model, and
// the tensor file must hold exactly one F32 lora_A [r, in] and lora_B
// [out, r] per adapted module, with the shapes of this model; anything else
// is refused with an error wrapping ErrAdapterFile (or ErrConfig for
// targets that match no layer).
func (lm *Model) LoadAdapter(dir, name string) (*Adapter, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	cfg, modules, specs, err := lm.plan(name, cfg)
	if err != nil {
		return nil, fmt.Errorf("lora: load %s: adapter does not fit this model: %w", dir, err)
	}
	path := filepath.Join(dir, WeightsFile)
	bad := func(format string, args ...any) (*Adapter, error) {
		return nil, fmt.Errorf("lora: load %s: %w: "+format, append([]any{path, ErrAdapterFile}, args...)...)
	}
	// Nothing is allocated from the config's claims until the file has
	// shown tensors of exactly the planned shapes: a file much larger than
	// the planned adapter is refused before it is read, a smaller one is
	// read (it is no larger than what is on disk) and checked tensor by
	// tensor, which names any mismatch.
	var want int64
	shapes := map[string][]int{}
	for _, sp := range specs {
		want += 4 * int64(sp.Shape[0]) * int64(sp.Shape[1])
	}
	for i, mod := range modules {
		shapes[tensorName(mod, "lora_A")] = specs[2*i].Shape
		shapes[tensorName(mod, "lora_B")] = specs[2*i+1].Shape
	}
	// Open checks the header against the file's size (padding, holes and
	// overlaps are refused) before any tensor data is read.
	r, err := safetensors.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("lora: load: %w", err)
		}
		return bad("%w", err)
	}
	defer r.Close()
	if have := r.DataSize(); have > want {
		return bad("%d bytes of tensors, but the config's adapter needs only %d", have, want)
	}
	f, err := r.ReadAll()
	if err != nil {
		return bad("%w", err)
	}
	found := map[string][]float32{}
	for _, t := range f.Tensors {
		shape, ok := shapes[t.Name]
		if !ok {
			return bad("unexpected tensor %q (this model's adapter has lora_A/lora_B for %d modules: %v)", t.Name, len(modules), modules)
		}
		if t.DType != safetensors.F32 {
			return bad("tensor %q is %v, want F32", t.Name, t.DType)
		}
		if len(t.Shape) != 2 || t.Shape[0] != int64(shape[0]) || t.Shape[1] != int64(shape[1]) {
			return bad("tensor %q has shape %v, this model needs %v", t.Name, t.Shape, shape)
		}
		vals, err := t.Float32s()
		if err != nil || len(vals) != shape[0]*shape[1] {
			return bad("tensor %q: %v", t.Name, err)
		}
		// NaN or Inf in A or B would make every output (and Merge) garbage.
		for i, v := range vals {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return bad("tensor %q: element %d is %v", t.Name, i, v)
			}
		}
		found[t.Name] = vals
	}
	for _, mod := range modules {
		for _, which := range []string{"lora_A", "lora_B"} {
			if _, ok := found[tensorName(mod, which)]; !ok {
				return bad("missing tensor %q", tensorName(mod, which))
			}
		}
	}
	a, err := lm.newAdapter(name, cfg)
	if err != nil {
		return nil, err
	}
	for _, mod := range modules {
		copy(a.A(mod).Data, found[tensorName(mod, "lora_A")])
		copy(a.B(mod).Data, found[tensorName(mod, "lora_B")])
	}
	if err := lm.install(a); err != nil {
		return nil, err
	}
	return a, nil
}
