package lora

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
)

// tinyLlama is a Llama-family config with GQA (6 query heads, 2 KV heads)
// and an untied head; qwen2 adds q/k/v biases.
func tinyLlama(modelType string) model.Config {
	c := model.Config{Family: model.FamilyLlama, ModelType: modelType, Vocab: 61, DModel: 24, Layers: 2, Heads: 6, KVHeads: 2,
		SeqLen: 16, Intermediate: 40, LayerNormEps: 1e-5, RopeTheta: 10000, Attention: model.AttentionFlash}
	if modelType == "qwen2" {
		c.AttnBias, c.TiedEmbeddings = true, true
	}
	return c
}

func newModel(t testing.TB, cfg model.Config) *model.Model {
	t.Helper()
	m, err := model.New(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readJSON(t testing.TB, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	return js
}

func writeJSON(t testing.TB, path string, js map[string]any) {
	t.Helper()
	raw, err := json.Marshal(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func stringsOf(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// An adapter saved for a Llama-family base has PEFT's names, shapes and
// config: short target_modules, fan_in_fan_out false; GPT-2's has
// fan_in_fan_out true.
func TestSavePEFTLayout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		base    model.Config
		cfg     Config
		targets []string
		tensors int
		fan     bool
		extra   map[string]any
	}{
		{"llama q,v", tinyLlama("llama"), Config{R: 4, Alpha: 8, TargetModules: []string{"q_proj", "v_proj"}, UseRSLoRA: true, BaseModel: "org/tiny"},
			[]string{"q_proj", "v_proj"}, 8, false, map[string]any{"use_rslora": true, "base_model_name_or_path": "org/tiny", "layers_to_transform": nil}},
		{"llama all-linear", tinyLlama("llama"), Config{R: 2, Alpha: 4, TargetModules: []string{AllLinear}},
			[]string{"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}, 28, false, nil},
		{"llama one block", tinyLlama("llama"), Config{R: 2, Alpha: 4, TargetModules: []string{"q_proj"}, LayersToTransform: []int{1}},
			[]string{"q_proj"}, 2, false, map[string]any{"layers_to_transform": []any{1.0}}},
		{"llama exclusions", tinyLlama("llama"), Config{R: 2, Alpha: 4, TargetModules: []string{AllLinear}, ExcludeModules: []string{"model.layers.0.mlp.up_proj"}},
			[]string{"down_proj", "gate_proj", "k_proj", "model.layers.1.mlp.up_proj", "o_proj", "q_proj", "v_proj"}, 26, false, nil},
		{"qwen2 with head", tinyLlama("qwen2"), Config{R: 2, Alpha: 4, TargetModules: []string{"k_proj", "o_proj"}},
			[]string{"k_proj", "o_proj"}, 8, false, nil},
		{"gpt2 all-linear", testModelConfig(32, 2, true), Config{R: 2, Alpha: 4, TargetModules: []string{AllLinear}},
			[]string{"c_attn", "c_fc", "c_proj"}, 16, true, nil},
		{"gpt2 attention projection", testModelConfig(32, 2, true), Config{R: 2, Alpha: 4, TargetModules: []string{"attn.c_proj"}},
			[]string{"attn.c_proj"}, 4, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, tc.base)
			lm, err := Apply(m, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			randomizeB(lm.Active(), 1, 0.05)
			dir := t.TempDir()
			if err := lm.Active().Save(dir); err != nil {
				t.Fatal(err)
			}
			js := readJSON(t, filepath.Join(dir, ConfigFile))
			if got := stringsOf(js["target_modules"]); !slices.Equal(got, tc.targets) {
				t.Errorf("target_modules %v, want %v", got, tc.targets)
			}
			want := map[string]any{"peft_type": "LORA", "task_type": "CAUSAL_LM", "fan_in_fan_out": tc.fan, "bias": "none", "use_dora": false, "modules_to_save": nil}
			for k, v := range tc.extra {
				want[k] = v
			}
			for k, v := range want {
				if g, _ := json.Marshal(js[k]); string(g) != string(must(json.Marshal(v))) {
					t.Errorf("%s = %s, want %v", k, g, v)
				}
			}
			f, err := safetensors.ReadFile(filepath.Join(dir, WeightsFile))
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Tensors) != tc.tensors {
				t.Errorf("%d tensors, want %d", len(f.Tensors), tc.tensors)
			}
			for _, mod := range lm.Active().Modules {
				l, _ := m.Linear(mod)
				in, out := l.Dims()
				r := int64(tc.cfg.R)
				for name, shape := range map[string][]int64{
					"base_model.model." + mod + ".lora_A.weight": {r, int64(in)},
					"base_model.model." + mod + ".lora_B.weight": {int64(out), r}} {
					if ten, ok := f.Tensor(name); !ok || !slices.Equal(ten.Shape, shape) {
						t.Errorf("tensor %s: present %v, shape %v, want %v", name, ok, ten.Shape, shape)
					}
				}
			}
			// PEFT's matching of the written target_modules selects the
			// same modules: loading it back gives the same adapter.
			ids := randIDs(12, 3)
			for i := range ids {
				ids[i] %= int32(tc.base.Vocab)
			}
			wantLogits := logits(t, m, ids, 1, 12)
			m2 := newModel(t, tc.base)
			lm2, err := Wrap(m2)
			if err != nil {
				t.Fatal(err)
			}
			a2, err := lm2.LoadAdapter(dir, DefaultAdapter)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a2.Modules, lm.Active().Modules) {
				t.Errorf("loaded modules %v, saved %v", a2.Modules, lm.Active().Modules)
			}
			if got := logits(t, m2, ids, 1, 12); !slices.Equal(got, wantLogits) {
				t.Errorf("reloaded adapter's logits differ by %g", maxDiff(got, wantLogits))
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// The ways PEFT writes an adapter all load: names with ".default", either
// fan_in_fan_out, a regular-expression target string, an integer
// layers_to_transform, F16/BF16 tensors, per-module ranks and alphas.
func TestLoadPEFTVariants(t *testing.T) {
	base := tinyLlama("llama")
	m := newModel(t, base)
	cfg := Config{R: 4, Alpha: 8, TargetModules: []string{"q_proj", "v_proj", "down_proj"}, UseRSLoRA: true}
	lm, err := Apply(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	randomizeB(lm.Active(), 2, 0.05)
	dir := t.TempDir()
	if err := lm.Active().Save(dir); err != nil {
		t.Fatal(err)
	}
	ids := randIDs(12, 4)
	for i := range ids {
		ids[i] %= int32(base.Vocab)
	}
	want := logits(t, m, ids, 1, 12)
	variant := func(name string, tol float64, edit func(d string)) {
		t.Helper()
		d := t.TempDir()
		copyAdapter(t, dir, d)
		edit(d)
		m2 := newModel(t, base)
		lm2, err := Wrap(m2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lm2.LoadAdapter(d, DefaultAdapter); err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if got := logits(t, m2, ids, 1, 12); maxDiff(got, want) > tol {
			t.Errorf("%s: logits differ by %g", name, maxDiff(got, want))
		}
	}
	editConfig := func(f func(js map[string]any)) func(string) {
		return func(d string) {
			p := filepath.Join(d, ConfigFile)
			js := readJSON(t, p)
			f(js)
			writeJSON(t, p, js)
		}
	}
	rewrite := func(f func(safetensors.Tensor) safetensors.Tensor) func(string) {
		return func(d string) {
			p := filepath.Join(d, WeightsFile)
			sf, err := safetensors.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for i := range sf.Tensors {
				sf.Tensors[i] = f(sf.Tensors[i])
			}
			if err := safetensors.WriteFile(p, sf.Tensors, sf.Metadata); err != nil {
				t.Fatal(err)
			}
		}
	}
	variant("as saved", 0, func(string) {})
	variant(".default names", 0, rewrite(func(t safetensors.Tensor) safetensors.Tensor {
		t.Name = strings.Replace(strings.Replace(t.Name, ".lora_A.", ".lora_A.default.", 1), ".lora_B.", ".lora_B.default.", 1)
		return t
	}))
	// PEFT sets fan_in_fan_out to the layer type's (with a warning): the
	// tensors are the same either way.
	variant("fan_in_fan_out true on nn.Linear", 0, editConfig(func(js map[string]any) { js["fan_in_fan_out"] = true }))
	variant("regex string", 0, editConfig(func(js map[string]any) {
		js["target_modules"] = `model\.layers\.\d+\.(self_attn\.(q|v)_proj|mlp\.down_proj)`
	}))
	variant("orthogonal init", 0, editConfig(func(js map[string]any) { js["init_lora_weights"] = "orthogonal" }))
	variant("modules_to_save empty", 0, editConfig(func(js map[string]any) { js["modules_to_save"] = []any{} }))
	variant("unknown harmless keys", 0, editConfig(func(js map[string]any) { js["peft_version"] = "0.17.0"; delete(js, "galleon_seed") }))
	variant("BF16 tensors", 1e-2, rewrite(func(t safetensors.Tensor) safetensors.Tensor {
		vals := must(t.Float32s())
		b := make([]byte, 2*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(math.Float32bits(v)>>16)) // truncation: a valid BF16
		}
		return safetensors.Tensor{Name: t.Name, DType: safetensors.BF16, Shape: t.Shape, Data: b}
	}))

	// Only block 1's q_proj, selected three ways.
	one := func(js map[string]any) {
		js["target_modules"] = []any{"q_proj"}
	}
	m1 := newModel(t, base)
	lm1, err := Apply(m1, Config{R: 4, Alpha: 8, TargetModules: []string{"model.layers.1.self_attn.q_proj"}, UseRSLoRA: true})
	if err != nil {
		t.Fatal(err)
	}
	copy(lm1.Active().A("model.layers.1.self_attn.q_proj").Data, lm.Active().A("model.layers.1.self_attn.q_proj").Data)
	copy(lm1.Active().B("model.layers.1.self_attn.q_proj").Data, lm.Active().B("model.layers.1.self_attn.q_proj").Data)
	want1 := logits(t, m1, ids, 1, 12)
	for _, edit := range []func(js map[string]any){
		func(js map[string]any) { one(js); js["layers_to_transform"] = 1 },
		func(js map[string]any) {
			one(js)
			js["layers_to_transform"] = []any{1}
			js["layers_pattern"] = "layers"
		},
		func(js map[string]any) {
			one(js)
			js["layers_to_transform"] = []any{1}
			js["layers_pattern"] = []any{"h", "layers"}
		},
	} {
		d := t.TempDir()
		copyAdapter(t, dir, d)
		editConfig(edit)(d)
		// The file keeps only that module's tensors.
		p := filepath.Join(d, WeightsFile)
		sf := must(safetensors.ReadFile(p))
		var keep []safetensors.Tensor
		for _, ten := range sf.Tensors {
			if strings.Contains(ten.Name, "layers.1.self_attn.q_proj") {
				keep = append(keep, ten)
			}
		}
		if err := safetensors.WriteFile(p, keep, nil); err != nil {
			t.Fatal(err)
		}
		m2 := newModel(t, base)
		lm2 := must(Wrap(m2))
		a, err := lm2.LoadAdapter(d, DefaultAdapter)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a.Modules, []string{"model.layers.1.self_attn.q_proj"}) {
			t.Errorf("layers_to_transform: modules %v", a.Modules)
		}
		if got := logits(t, m2, ids, 1, 12); maxDiff(got, want1) != 0 {
			t.Errorf("layers_to_transform: logits differ by %g", maxDiff(got, want1))
		}
	}
}

// rank_pattern and alpha_pattern give modules their own rank and alpha, the
// first matching key winning as in PEFT; they are saved in order and read
// back.
func TestRankAlphaPattern(t *testing.T) {
	cfg := Config{R: 4, Alpha: 8, TargetModules: []string{AllLinear},
		RankPattern:  []RankOverride{{`layers\.0\.self_attn\.q_proj`, 2}, {"q_proj", 6}, {"down_proj", 3}},
		AlphaPattern: []AlphaOverride{{"mlp\\..*", 1.5}}}
	for name, want := range map[string][2]float64{
		"model.layers.0.self_attn.q_proj": {2, 8}, "model.layers.1.self_attn.q_proj": {6, 8},
		"model.layers.0.mlp.down_proj": {3, 1.5}, "model.layers.1.mlp.up_proj": {4, 1.5}, "model.layers.1.self_attn.k_proj": {4, 8},
	} {
		if r, a := cfg.ModuleRank(name), cfg.ModuleAlpha(name); float64(r) != want[0] || a != want[1] {
			t.Errorf("%s: r %d alpha %v, want %v", name, r, a, want)
		}
	}
	// A key matches at a dot boundary only, and must match to the end.
	if r := cfg.ModuleRank("model.layers.1.self_attn.xq_proj"); r != 4 {
		t.Errorf("xq_proj took rank %d from pattern q_proj", r)
	}
	m := newModel(t, tinyLlama("llama"))
	lm, err := Apply(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := lm.Active()
	if got := a.A("model.layers.0.self_attn.q_proj").Shape; !slices.Equal(got, []int{2, 24}) {
		t.Errorf("block 0 q_proj lora_A shape %v, want [2 24]", got)
	}
	if got, want := a.ModuleScale("model.layers.0.mlp.down_proj"), float32(1.5/3.0); got != want {
		t.Errorf("down_proj scale %v, want %v", got, want)
	}
	randomizeB(a, 5, 0.05)
	dir := t.TempDir()
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	var pc peftConfig
	if err := json.Unmarshal(must(os.ReadFile(filepath.Join(dir, ConfigFile))), &pc); err != nil {
		t.Fatal(err)
	}
	if keys, _, err := readOrdered(pc.RankPattern); err != nil || !slices.Equal(keys, []string{`layers\.0\.self_attn\.q_proj`, "q_proj", "down_proj"}) {
		t.Errorf("rank_pattern keys %q (%v), want the configuration's order", keys, err)
	}
	ids := randIDs(12, 6)
	for i := range ids {
		ids[i] %= 61
	}
	want := logits(t, m, ids, 1, 12)
	m2 := newModel(t, tinyLlama("llama"))
	a2, err := must(Wrap(m2)).LoadAdapter(dir, DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a2.Config.RankPattern, cfg.RankPattern) || !slices.Equal(a2.Config.AlphaPattern, cfg.AlphaPattern) {
		t.Errorf("read back %v %v", a2.Config.RankPattern, a2.Config.AlphaPattern)
	}
	if got := logits(t, m2, ids, 1, 12); !slices.Equal(got, want) {
		t.Errorf("reloaded logits differ by %g", maxDiff(got, want))
	}
	// Merging uses each module's own rank and scale.
	merged, _, err := lm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	if got := logits(t, merged, ids, 1, 12); maxDiff(got, want) > 1e-4 {
		t.Errorf("merged logits differ by %g", maxDiff(got, want))
	}
	for _, bad := range []Config{
		{R: 2, Alpha: 1, TargetModules: []string{AllLinear}, RankPattern: []RankOverride{{"q_proj", 0}}},
		{R: 2, Alpha: 1, TargetModules: []string{AllLinear}, RankPattern: []RankOverride{{"(", 2}}},
		{R: 2, Alpha: 1, TargetModules: []string{AllLinear}, AlphaPattern: []AlphaOverride{{"q_proj", -1}}},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", bad, err)
		}
	}
}

func copyAdapter(t testing.TB, from, to string) {
	t.Helper()
	for _, f := range []string{ConfigFile, WeightsFile} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// PEFT features galleon lacks are refused with an error naming them.
func TestLoadRefusesPEFTFeatures(t *testing.T) {
	base := tinyLlama("llama")
	lm, err := Apply(newModel(t, base), Config{R: 2, Alpha: 4, TargetModules: []string{"q_proj", "v_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := lm.Active().Save(dir); err != nil {
		t.Fatal(err)
	}
	check := func(name, want string, edit func(d string)) {
		t.Helper()
		d := t.TempDir()
		copyAdapter(t, dir, d)
		edit(d)
		_, err := must(Wrap(newModel(t, base))).LoadAdapter(d, DefaultAdapter)
		if !errors.Is(err, ErrAdapterFile) && !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrAdapterFile", name, err)
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v does not say %q", name, err, want)
		}
	}
	config := func(k string, v any) func(string) {
		return func(d string) {
			p := filepath.Join(d, ConfigFile)
			js := readJSON(t, p)
			js[k] = v
			writeJSON(t, p, js)
		}
	}
	addTensor := func(name string, shape []int64) func(string) {
		return func(d string) {
			p := filepath.Join(d, WeightsFile)
			sf := must(safetensors.ReadFile(p))
			n := int64(1)
			for _, s := range shape {
				n *= s
			}
			ts := append(sf.Tensors, safetensors.F32Tensor(name, shape, make([]float32, n)))
			if err := safetensors.WriteFile(p, ts, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	renameTensor := func(from, to string) func(string) {
		return func(d string) {
			p := filepath.Join(d, WeightsFile)
			sf := must(safetensors.ReadFile(p))
			for i := range sf.Tensors {
				if sf.Tensors[i].Name == from {
					sf.Tensors[i].Name = to
				}
			}
			if err := safetensors.WriteFile(p, sf.Tensors, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	q0 := "base_model.model.model.layers.0.self_attn.q_proj"
	check("use_dora", "DoRA", config("use_dora", true))
	check("DoRA magnitude", "DoRA", addTensor(q0+".lora_magnitude_vector", []int64{24}))
	check("DoRA magnitude .weight", "DoRA", addTensor(q0+".lora_magnitude_vector.default.weight", []int64{24}))
	check("modules_to_save", "modules_to_save", config("modules_to_save", []any{"lm_head"}))
	check("embedding adapter", "embedding", addTensor("base_model.model.model.embed_tokens.lora_embedding_A", []int64{2, 61}))
	check("bias all", "bias", config("bias", "all"))
	check("base bias tensor", "bias", addTensor("base_model.model.model.layers.0.self_attn.q_proj.bias", []int64{24}))
	check("lora_bias", "lora_bias", config("lora_bias", true))
	check("lora_B bias tensor", "lora_bias", addTensor(q0+".lora_B.bias", []int64{24}))
	check("target_parameters", "target_parameters", config("target_parameters", []any{"experts.weight"}))
	check("layer_replication", "layer_replication", config("layer_replication", []any{[]any{0, 1}}))
	check("full weight", "full weight", addTensor("base_model.model.model.embed_tokens.weight", []int64{61, 24}))
	check("unknown tensor", "unexpected tensor", addTensor(q0+".lora_C.weight", []int64{24}))
	check("no prefix", "unexpected tensor", renameTensor(q0+".lora_A.weight", "model.layers.0.self_attn.q_proj.lora_A.weight"))
	check("module the model lacks", `which this model does not have`, renameTensor(q0+".lora_A.weight", "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"))
	check("module not selected", `do not select`, renameTensor(q0+".lora_A.weight", "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"))
	check("duplicate with .default", "same matrix", addTensor(q0+".lora_A.default.weight", []int64{2, 24}))
	check("shape", "shape", func(d string) {
		p := filepath.Join(d, WeightsFile)
		sf := must(safetensors.ReadFile(p))
		for i := range sf.Tensors {
			if sf.Tensors[i].Name == q0+".lora_A.weight" {
				sf.Tensors[i].Shape = []int64{4, 12}
			}
		}
		if err := safetensors.WriteFile(p, sf.Tensors, nil); err != nil {
			t.Fatal(err)
		}
	})
	check("pissa", "changes the base weights", config("init_lora_weights", "pissa"))
	check("targets select nothing", "match none", config("target_modules", []any{"c_attn"}))
	check("rank_pattern not an int", "rank_pattern", config("rank_pattern", map[string]any{"q_proj": "x"}))
	check("layers_pattern bad", "layers_pattern", func(d string) {
		config("layers_to_transform", 0)(d)
		config("layers_pattern", "(")(d)
	})

	// A tied head (Qwen2 here) has no lm_head module to adapt.
	qwen := tinyLlama("qwen2")
	lmq := must(Apply(newModel(t, qwen), Config{R: 2, Alpha: 4, TargetModules: []string{"q_proj"}}))
	dq := t.TempDir()
	if err := lmq.Active().Save(dq); err != nil {
		t.Fatal(err)
	}
	config("target_modules", []any{"q_proj", "lm_head"})(dq)
	addTensor("base_model.model.lm_head.lora_A.weight", []int64{2, 24})(dq)
	if _, err := must(Wrap(newModel(t, qwen))).LoadAdapter(dq, DefaultAdapter); !errors.Is(err, ErrAdapterFile) || !strings.Contains(err.Error(), "tied") {
		t.Errorf("adapter on a tied head: %v, want an error saying the head is tied", err)
	}
}
