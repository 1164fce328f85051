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
	"slices"
	"strings"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
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
	PeftType              string          `json:"peft_type"`
	TaskType              string          `json:"task_type"`
	BaseModelNameOrPath   string          `json:"base_model_name_or_path"`
	Revision              *string         `json:"revision"`
	InferenceMode         bool            `json:"inference_mode"`
	R                     int             `json:"r"`
	LoraAlpha             float64         `json:"lora_alpha"`
	LoraDropout           float64         `json:"lora_dropout"`
	TargetModules         json.RawMessage `json:"target_modules"`
	ExcludeModules        json.RawMessage `json:"exclude_modules"`
	Bias                  string          `json:"bias"`
	FanInFanOut           bool            `json:"fan_in_fan_out"`
	UseRSLoRA             bool            `json:"use_rslora"`
	UseDoRA               bool            `json:"use_dora"`
	LoraBias              bool            `json:"lora_bias"`
	InitLoraWeights       json.RawMessage `json:"init_lora_weights"`
	ModulesToSave         json.RawMessage `json:"modules_to_save"`
	LayersToTransform     json.RawMessage `json:"layers_to_transform"`
	LayersPattern         json.RawMessage `json:"layers_pattern"`
	RankPattern           json.RawMessage `json:"rank_pattern"`
	AlphaPattern          json.RawMessage `json:"alpha_pattern"`
	AutoMapping           json.RawMessage `json:"auto_mapping"`
	LoftqConfig           map[string]any  `json:"loftq_config"`
	MegatronConfig        json.RawMessage `json:"megatron_config"`
	MegatronCore          string          `json:"megatron_core"`
	LayerReplication      json.RawMessage `json:"layer_replication"`
	TargetParameters      json.RawMessage `json:"target_parameters"`
	TrainableTokenIndices json.RawMessage `json:"trainable_token_indices"`
	GalleonSeed           *uint64         `json:"galleon_seed,omitempty"`
	GalleonAdapterFormat  string          `json:"galleon_format,omitempty"`
}

// unsupportedKeys are PEFT options that change what an adapter computes
// and that galleon does not implement: each must be absent, null, false
// or empty in a file galleon loads.
var unsupportedKeys = []struct{ key, feature string }{
	{"use_dora", "DoRA (use_dora)"},
	{"modules_to_save", "modules_to_save (fully trained copies of modules)"},
	{"lora_bias", "trained LoRA biases (lora_bias)"},
	{"layer_replication", "layer_replication"},
	{"target_parameters", "LoRA on parameters (target_parameters)"},
	{"trainable_token_indices", "trained token embeddings (trainable_token_indices)"},
	{"alora_invocation_tokens", "activated LoRA (alora_invocation_tokens)"},
	{"use_qalora", "QA-LoRA (use_qalora)"},
	{"use_bdlora", "block-diagonal LoRA (use_bdlora)"},
	{"velora_config", "VeLoRA (velora_config)"},
	{"monteclora_config", "MonteCLoRA (monteclora_config)"},
	{"megatron_config", "Megatron-parallel layers (megatron_config)"},
}

func isNull(m json.RawMessage) bool {
	s := strings.TrimSpace(string(m))
	return s == "" || s == "null"
}

// isUnset reports whether a JSON value is absent, null, false or empty.
func isUnset(m json.RawMessage) bool {
	switch s := strings.TrimSpace(string(m)); s {
	case "", "null", "false", "[]", "{}", `""`:
		return true
	}
	var v any
	if json.Unmarshal(m, &v) != nil {
		return false
	}
	switch v := v.(type) {
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// orderedJSON writes keys and values as a JSON object in the given order.
func orderedJSON(keys []string, vals []any) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		kj, _ := json.Marshal(k)
		vj, _ := json.Marshal(vals[i])
		b.Write(kj)
		b.WriteString(": ")
		b.Write(vj)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// readOrdered reads a JSON object's members in the file's order (PEFT's
// rank_pattern and alpha_pattern: the first matching key wins).
func readOrdered(raw json.RawMessage) ([]string, []json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("want an object of pattern: value")
	}
	var keys []string
	var vals []json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, ok := tok.(string)
		if !ok {
			return nil, nil, fmt.Errorf("want an object of pattern: value")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys = append(keys, k)
		vals = append(vals, v)
	}
	return keys, vals, nil
}

// Save writes the adapter to dir as PEFT does: adapter_config.json and
// adapter_model.safetensors holding only the adapter's tensors, named
// base_model.model.<module>.lora_A.weight ([r, in]) and .lora_B.weight
// ([out, r]) — for a Llama-family base
// base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight — which
// PEFT's PeftModel.from_pretrained(base, dir) loads. target_modules holds
// short names as PEFT writes them ("q_proj", "v_proj"; the shortest suffix
// that selects exactly the adapted layers), fan_in_fan_out is true for
// GPT-2 (Conv1D layers) and false for the Llama family (torch.nn.Linear),
// and rank_pattern/alpha_pattern, layers_to_transform and use_rslora carry
// the configuration's. A merged adapter saves the same matrices.
func (a *Adapter) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	cfg := a.Config
	base := a.owner.Base
	targets, _ := json.Marshal(cfg.shortTargets(a.Modules, base.LinearNames()))
	init := json.RawMessage("true")
	if cfg.Init == InitGaussian {
		init = json.RawMessage(`"gaussian"`)
	}
	layers, pattern := json.RawMessage("null"), json.RawMessage("null")
	if len(cfg.LayersToTransform) > 0 {
		layers, _ = json.Marshal(cfg.LayersToTransform)
		if len(cfg.LayersPattern) > 0 {
			pattern, _ = json.Marshal(cfg.LayersPattern)
		}
	}
	var rk, ak []string
	var rv, av []any
	for _, o := range cfg.RankPattern {
		rk, rv = append(rk, o.Pattern), append(rv, o.R)
	}
	for _, o := range cfg.AlphaPattern {
		ak, av = append(ak, o.Pattern), append(av, o.Alpha)
	}
	seed := cfg.Seed
	pc := peftConfig{
		PeftType: "LORA", TaskType: "CAUSAL_LM", BaseModelNameOrPath: cfg.BaseModel,
		InferenceMode: true, R: cfg.R, LoraAlpha: cfg.Alpha, LoraDropout: cfg.Dropout,
		TargetModules: targets, ExcludeModules: json.RawMessage("null"),
		Bias: "none", FanInFanOut: base.Config.FamilyName() == model.FamilyGPT2, UseRSLoRA: cfg.UseRSLoRA, InitLoraWeights: init,
		ModulesToSave: json.RawMessage("null"), LayersToTransform: layers, LayersPattern: pattern,
		RankPattern: orderedJSON(rk, rv), AlphaPattern: orderedJSON(ak, av),
		AutoMapping: json.RawMessage("null"), LoftqConfig: map[string]any{}, MegatronConfig: json.RawMessage("null"),
		MegatronCore: "megatron.core", LayerReplication: json.RawMessage("null"),
		TargetParameters: json.RawMessage("null"), TrainableTokenIndices: json.RawMessage("null"), GalleonSeed: &seed,
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
	if err := safetensors.WriteAtomic(filepath.Join(dir, ConfigFile), func(w io.Writer) error {
		_, err := w.Write(append(js, '\n'))
		return err
	}); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	return nil
}

func tensorName(module, which string) string { return tensorPrefix + module + "." + which + ".weight" }

// ReadConfig reads dir's adapter_config.json into a Config. It accepts what
// PEFT writes for a LoRA adapter of a causal LM: target_modules as a list
// (names or suffixes) or a string (a regular expression over whole names,
// or "all-linear"), exclude_modules, layers_to_transform and
// layers_pattern, rank_pattern and alpha_pattern, use_rslora. It refuses,
// with an error naming the feature, what galleon does not implement: DoRA,
// modules_to_save, trained biases (bias other than "none", lora_bias),
// layer_replication, target_parameters, trainable tokens and the other
// LoRA variants that change the forward pass. fan_in_fan_out is not part
// of Config: it describes the base layers' layout (true for GPT-2's Conv1D,
// false for the Llama family's torch.nn.Linear), which PEFT corrects to the
// layer type, and the tensors' shapes are the same either way.
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
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		return bad("%v", err)
	}
	for _, u := range unsupportedKeys {
		if v, ok := all[u.key]; ok && !isUnset(v) {
			return bad("%s is not supported (%s = %s)", u.feature, u.key, clip(string(v)))
		}
	}
	var pc peftConfig
	if err := json.Unmarshal(raw, &pc); err != nil {
		return bad("%v", err)
	}
	switch {
	case pc.PeftType != "LORA":
		return bad("peft_type %q, want \"LORA\"", pc.PeftType)
	case pc.TaskType != "" && pc.TaskType != "CAUSAL_LM":
		return bad("task_type %q, want \"CAUSAL_LM\"", pc.TaskType)
	case pc.Bias != "" && pc.Bias != "none":
		return bad("bias %q: trained biases are not supported, only \"none\"", pc.Bias)
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
	if cfg.LayersToTransform, err = intOrList(pc.LayersToTransform); err != nil {
		return bad("layers_to_transform: %v", err)
	}
	if cfg.LayersPattern, err = stringOrList(pc.LayersPattern); err != nil {
		return bad("layers_pattern: %v", err)
	}
	keys, vals, err := readOrdered(pc.RankPattern)
	if err != nil {
		return bad("rank_pattern: %v", err)
	}
	for i, k := range keys {
		var r int
		if err := json.Unmarshal(vals[i], &r); err != nil {
			return bad("rank_pattern %q: %s is not an integer rank", k, clip(string(vals[i])))
		}
		cfg.RankPattern = append(cfg.RankPattern, RankOverride{Pattern: k, R: r})
	}
	if keys, vals, err = readOrdered(pc.AlphaPattern); err != nil {
		return bad("alpha_pattern: %v", err)
	}
	for i, k := range keys {
		var a float64
		if err := json.Unmarshal(vals[i], &a); err != nil {
			return bad("alpha_pattern %q: %s is not a number", k, clip(string(vals[i])))
		}
		cfg.AlphaPattern = append(cfg.AlphaPattern, AlphaOverride{Pattern: k, Alpha: a})
	}
	switch s := strings.TrimSpace(string(pc.InitLoraWeights)); s {
	case "", "null", "true", "false": // false: PEFT's random-B init for tests; B is in the file anyway
	case `"gaussian"`:
		cfg.Init = InitGaussian
	case `"orthogonal"`, `"eva"`:
		// Initializations of A and B only: the file holds the trained
		// matrices and the base is unchanged.
	default:
		// PiSSA, OLoRA, CorDA, LoRA-GA and LoftQ change the base weights
		// when they initialize: the adapter needs that changed base.
		return bad("init_lora_weights %s is not supported: that initialization changes the base weights, which galleon does not reproduce", clip(s))
	}
	if err := cfg.Validate(); err != nil {
		return bad("%v", err)
	}
	return cfg, nil
}

// clip shortens a value quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
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
	if strings.EqualFold(re, AllLinear) {
		return []string{AllLinear}, nil
	}
	return []string{"re:" + re}, nil
}

// intOrList reads layers_to_transform: null, an index or a list of them.
func intOrList(raw json.RawMessage) ([]int, error) {
	if isNull(raw) {
		return nil, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err != nil {
		return nil, fmt.Errorf("want a block index or a list of them")
	}
	return []int{one}, nil
}

// stringOrList reads layers_pattern: null, a pattern or a list of them.
func stringOrList(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err != nil {
		return nil, fmt.Errorf("want a pattern or a list of them")
	}
	if one == "" {
		return nil, nil
	}
	return []string{one}, nil
}

// parseTensorName splits an adapter tensor name into its module and
// "lora_A" or "lora_B". PEFT saves base_model.model.<module>.lora_A.weight;
// some files keep the adapter name (….lora_A.default.weight). Tensors of
// PEFT features galleon lacks are refused naming the feature.
func parseTensorName(name string) (module, which string, err error) {
	rest, ok := strings.CutPrefix(name, tensorPrefix)
	parts := strings.Split(rest, ".")
	for _, p := range parts {
		switch p {
		case "lora_magnitude_vector":
			return "", "", fmt.Errorf("tensor %q is DoRA's magnitude vector: DoRA is not supported", name)
		case "lora_embedding_A", "lora_embedding_B":
			return "", "", fmt.Errorf("tensor %q is an embedding adapter: LoRA on embeddings is not supported", name)
		}
	}
	n := len(parts)
	if !ok || n < 3 {
		return "", "", fmt.Errorf("unexpected tensor %q: want %s<module>.lora_A.weight or .lora_B.weight", name, tensorPrefix)
	}
	last := parts[n-1]
	if n >= 4 && parts[n-2] == "default" && (parts[n-3] == "lora_A" || parts[n-3] == "lora_B") {
		parts = append(parts[:n-2:n-2], last)
		n--
	}
	switch {
	case (parts[n-2] == "lora_A" || parts[n-2] == "lora_B") && last == "weight" && n > 2:
		return strings.Join(parts[:n-2], "."), parts[n-2], nil
	case parts[n-2] == "lora_B" && last == "bias":
		return "", "", fmt.Errorf("tensor %q is a trained LoRA bias (lora_bias): not supported", name)
	case last == "bias":
		return "", "", fmt.Errorf("tensor %q is a trained bias of the base layer (bias \"all\" or \"lora_only\"): not supported", name)
	case last == "weight" && !slices.ContainsFunc(parts, func(p string) bool { return strings.HasPrefix(p, "lora_") }):
		return "", "", fmt.Errorf("tensor %q is a full weight of the base model (modules_to_save, or embeddings PEFT saves after a vocabulary resize): not supported", name)
	}
	return "", "", fmt.Errorf("unexpected tensor %q: want %s<module>.lora_A.weight or .lora_B.weight", name, tensorPrefix)
}

// LoadAdapter reads the adapter in dir (as written by Adapter.Save or by
// PEFT for this model) and adds it to lm under name; it becomes active if it
// is the first adapter.
//
// As PEFT, a list of target_modules must select at least one of the
// model's linear layers, not every entry; the tensor file must then hold
// exactly one lora_A [r, in] and one lora_B [out, r] per selected module
// (F32, or F16/BF16 widened exactly), named with or without the adapter
// name "default". The files are treated as hostile: the config must be
// small and valid, the header is checked against the file and against the
// planned shapes before any tensor is read, and anything else — a tensor
// for a module the model lacks or the config does not select, a wrong
// shape, a missing tensor, NaN or Inf, DoRA, embedding adapters, trained
// biases — is refused with an error naming it and wrapping ErrAdapterFile
// (or ErrConfig for targets that select nothing).
func (lm *Model) LoadAdapter(dir, name string) (*Adapter, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, WeightsFile)
	bad := func(format string, args ...any) (*Adapter, error) {
		return nil, fmt.Errorf("lora: load %s: %w: "+format, append([]any{path, ErrAdapterFile}, args...)...)
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
	// Names first: a feature galleon lacks is named before the config's
	// targets are matched against the model.
	type slot struct{ module, which string }
	infos := r.Tensors()
	slots := make([]slot, len(infos))
	for i, t := range infos {
		mod, which, err := parseTensorName(t.Name)
		if err != nil {
			return bad("%v", err)
		}
		slots[i] = slot{mod, which}
	}
	cfg, modules, specs, err := lm.plan(name, cfg, false)
	if err != nil {
		return nil, fmt.Errorf("lora: load %s: adapter does not fit this model: %w", dir, err)
	}
	// Nothing is allocated from the config's claims until the header has
	// shown tensors of exactly the planned shapes, so a tensor is read only
	// when the file holds its bytes.
	shapes := map[slot][]int{}
	for i, mod := range modules {
		shapes[slot{mod, "lora_A"}] = specs[2*i].Shape
		shapes[slot{mod, "lora_B"}] = specs[2*i+1].Shape
	}
	linears := map[string]bool{}
	for _, l := range lm.Base.LinearNames() {
		linears[l] = true
	}
	from := map[slot]string{}
	for i, t := range infos {
		sl := slots[i]
		shape, ok := shapes[sl]
		switch {
		case !ok && sl.module == model.NameHead && lm.Base.Config.TiedEmbeddings:
			return bad("tensor %q adapts lm_head, which this model ties to its token embedding: adapters on a tied head are not supported", t.Name)
		case !ok && !linears[sl.module]:
			return bad("tensor %q is for module %q, which this model does not have", t.Name, sl.module)
		case !ok:
			return bad("tensor %q is for module %q, which the config's target_modules %q do not select", t.Name, sl.module, cfg.TargetModules)
		case from[sl] != "":
			return bad("tensors %q and %q are the same matrix", from[sl], t.Name)
		case t.DType != safetensors.F32 && t.DType != safetensors.F16 && t.DType != safetensors.BF16:
			return bad("tensor %q is %v, want F32, F16 or BF16", t.Name, t.DType)
		case len(t.Shape) != 2 || t.Shape[0] != int64(shape[0]) || t.Shape[1] != int64(shape[1]):
			return bad("tensor %q has shape %v, this model needs %v", t.Name, t.Shape, shape)
		}
		from[sl] = t.Name
	}
	for _, mod := range modules {
		for _, which := range []string{"lora_A", "lora_B"} {
			if from[slot{mod, which}] == "" {
				return bad("missing tensor %q", tensorName(mod, which))
			}
		}
	}
	a, err := lm.newAdapter(name, cfg, false)
	if err != nil {
		return nil, err
	}
	for _, mod := range modules {
		for _, p := range []struct {
			which string
			dst   *model.Param
		}{{"lora_A", a.A(mod)}, {"lora_B", a.B(mod)}} {
			tn := from[slot{mod, p.which}]
			vals, err := r.Float32s(tn)
			if err != nil || len(vals) != len(p.dst.Data) {
				return bad("tensor %q: %v", tn, err)
			}
			// NaN or Inf in A or B would make every output (and Merge) garbage.
			for i, v := range vals {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return bad("tensor %q: element %d is %v", tn, i, v)
				}
			}
			copy(p.dst.Data, vals)
		}
	}
	if err := lm.install(a); err != nil {
		return nil, err
	}
	return a, nil
}
