package model

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// tinyLlama is a small Llama-family config with odd sizes: 5 query and 1
// key/value heads of width 6 (head_dim given, 5·6 ≠ d_model 28), MLP 44,
// an untied head and per-projection biases chosen by the caller.
func tinyLlama() Config {
	return Config{Family: FamilyLlama, ModelType: "llama", Vocab: 259, DModel: 28, Layers: 2, Heads: 5, KVHeads: 1,
		HeadDimension: 6, SeqLen: 40, Intermediate: 44, LayerNormEps: 1e-5, RopeTheta: 10000, Attention: AttentionFlash}
}

func TestLlamaConfigValidation(t *testing.T) {
	base := tinyLlama()
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Family = "bert" }, `family "bert"`},
		{func(c *Config) { c.ModelType = "falcon" }, `unsupported model_type "falcon" (supported: gpt2, llama, mistral, qwen2)`},
		{func(c *Config) { c.ModelType = "gpt2" }, `model_type "gpt2" belongs to family "gpt2"`},
		{func(c *Config) { c.HeadDimension = 7 }, "even head_dim"},
		{func(c *Config) { c.RopeTheta = 0 }, "rope_theta must be positive"},
		{func(c *Config) { c.RopeScaling = &RopeScaling{Type: "yarn", Factor: 2} }, `rope_scaling type "yarn" is not supported`},
		{func(c *Config) { c.RopeScaling = &RopeScaling{Type: "linear"} }, "factor must be positive"},
		{func(c *Config) {
			c.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 4, HighFreqFactor: 1, OriginalMaxPositions: 8192}
		}, "low_freq_factor < high_freq_factor"},
		{func(c *Config) {
			c.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4}
		}, "original_max_position_embeddings"},
		{func(c *Config) { c.Intermediate = -1 }, "intermediate_size must be at least 0"},
		{func(c *Config) { c.SlidingWindow = -2 }, "sliding_window must be at least 0"},
		{func(c *Config) { c.HeadDimension = 0 }, "5 heads do not divide d_model 28"},
	} {
		cfg := base
		c.mut(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an ErrConfig mentioning %q", err, c.want)
		}
	}
	for _, ok := range []func(*Config){
		func(c *Config) { c.ModelType = "mistral"; c.SlidingWindow = 7 },
		func(c *Config) { c.ModelType = "qwen2"; c.AttnBias = true },
		func(c *Config) { c.ModelType = "" },
		func(c *Config) { c.RopeScaling = &RopeScaling{Type: "linear", Factor: 2} },
		func(c *Config) {
			c.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 16}
		},
	} {
		cfg := base
		ok(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
	gpt := presets["tiny"].Config
	for _, mut := range []func(*Config){
		func(c *Config) { c.RopeTheta = 1e4 },
		func(c *Config) { c.SlidingWindow = 4 },
		func(c *Config) { c.HeadDimension = 16 },
	} {
		cfg := gpt
		mut(&cfg)
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("gpt2 accepted %+v", cfg)
		}
	}
}

// galleon's checkpoints from before the family fields hold a config JSON
// without them: it must still mean GPT-2.
func TestOldConfigJSONIsGPT2(t *testing.T) {
	old := `{"vocab_size":256,"n_embd":128,"n_layer":2,"n_head":4,"n_kv_head":4,"n_positions":64,"mlp_ratio":4,` +
		`"dropout":0,"tie_word_embeddings":true,"layer_norm_epsilon":0.00001,"attention":"flash"}`
	var cfg Config
	if err := json.Unmarshal([]byte(old), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.FamilyName() != FamilyGPT2 || cfg.HFModelType() != "gpt2" || cfg.MLPWidth() != 512 || cfg.HeadDim() != 32 {
		t.Errorf("old config read as %+v", cfg)
	}
	if !slices.Equal(cfg.LinearNames(), presets["tiny"].Config.LinearNames()) {
		t.Error("old config has other linears")
	}
}

func TestLlamaParamNames(t *testing.T) {
	cfg := tinyLlama()
	cfg.ModelType, cfg.AttnBias = "qwen2", true // q/k/v biased, o and MLP not
	ps, err := NewParamSet(cfg.paramSpecs())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"model.embed_tokens.weight"}
	for i := range 2 {
		b := cfg.BlockPrefix(i) + "."
		want = append(want, b+"input_layernorm.weight",
			b+"self_attn.q_proj.weight", b+"self_attn.q_proj.bias", b+"self_attn.k_proj.weight", b+"self_attn.k_proj.bias",
			b+"self_attn.v_proj.weight", b+"self_attn.v_proj.bias", b+"self_attn.o_proj.weight",
			b+"post_attention_layernorm.weight", b+"mlp.gate_proj.weight", b+"mlp.up_proj.weight", b+"mlp.down_proj.weight")
	}
	want = append(want, "model.norm.weight", "lm_head.weight")
	if got := ps.Names(); !slices.Equal(got, want) {
		t.Errorf("names\n got %v\nwant %v", got, want)
	}
	shapes := map[string][]int{
		"model.embed_tokens.weight": {259, 28}, "model.layers.1.self_attn.q_proj.weight": {28, 30},
		"model.layers.1.self_attn.k_proj.weight": {28, 6}, "model.layers.1.self_attn.v_proj.bias": {6},
		"model.layers.0.self_attn.o_proj.weight": {30, 28}, "model.layers.0.mlp.gate_proj.weight": {28, 44},
		"model.layers.0.mlp.down_proj.weight": {44, 28}, "lm_head.weight": {28, 259}, "model.norm.weight": {28},
	}
	for name, shape := range shapes {
		if p := ps.Get(name); p == nil || !slices.Equal(p.Shape, shape) {
			t.Errorf("%s: %v, want %v", name, p, shape)
		}
	}
	if !ps.Get("model.layers.0.mlp.up_proj.weight").Decay || ps.Get("model.embed_tokens.weight").Decay || ps.Get("model.norm.weight").Decay {
		t.Error("decay: linear weights only")
	}
	n, err := cfg.ParamCount()
	if err != nil || n != int64(ps.Len()) {
		t.Errorf("ParamCount %d (%v), allocated %d", n, err, ps.Len())
	}
	lin := cfg.LinearNames()
	if len(lin) != 2*7+1 || lin[0] != "model.layers.0.self_attn.q_proj" || lin[6] != "model.layers.0.mlp.down_proj" || lin[14] != NameHead {
		t.Errorf("LinearNames %v", lin)
	}
	cfg.TiedEmbeddings, cfg.MLPBias, cfg.AttnOutBias = true, true, true
	ps, _ = NewParamSet(cfg.paramSpecs())
	if ps.Get("lm_head.weight") != nil || ps.Get("model.layers.1.mlp.down_proj.bias") == nil || ps.Get("model.layers.0.self_attn.o_proj.bias") == nil {
		t.Error("tied head or MLP/o biases")
	}
	if slices.Contains(cfg.LinearNames(), NameHead) {
		t.Error("tied model lists lm_head")
	}
	m, err := New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range m.Weights.Get("model.layers.1.post_attention_layernorm.weight").Data {
		if v != 1 {
			t.Fatal("RMSNorm gain not 1")
		}
	}
	z, err := NewZeroed(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range z.Weights.Data {
		if v != 0 {
			t.Fatal("NewZeroed is not zero")
		}
	}
}

func TestPresetConstructors(t *testing.T) {
	for _, c := range []struct {
		cfg        Config
		params     int64
		linears    int
		headDim, w int
	}{
		// Hugging Face's counts: gpt2 124,439,808; SmolLM2-135M 134,515,008.
		{GPT2_124M(), 124_439_808, 48, 64, 3072},
		{SmolLM2_135M(), 134_515_008, 210, 64, 1536},
	} {
		if err := c.cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		n, err := c.cfg.ParamCount()
		if err != nil || n != c.params {
			t.Errorf("%s: %d parameters (%v), want %d", c.cfg.HFModelType(), n, err, c.params)
		}
		if len(c.cfg.LinearNames()) != c.linears || c.cfg.HeadDim() != c.headDim || c.cfg.MLPWidth() != c.w {
			t.Errorf("%+v", c.cfg)
		}
	}
}

func TestLinearHasBias(t *testing.T) {
	gpt, llama := presets["tiny"].Config, tinyLlama()
	llama.AttnBias = true
	for _, c := range []struct {
		cfg  Config
		name string
		want bool
	}{
		{gpt, "transformer.h.1.attn.c_attn", true}, {gpt, "transformer.h.0.mlp.c_proj", true}, {gpt, NameHead, false},
		{llama, "model.layers.1.self_attn.k_proj", true}, {llama, "model.layers.0.self_attn.o_proj", false},
		{llama, "model.layers.0.mlp.up_proj", false}, {llama, "transformer.h.0.attn.c_attn", false},
	} {
		if got := c.cfg.LinearHasBias(c.name); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// A Llama-family model trains (the loss falls on repetitive text), saves
// and reloads as a galleon checkpoint with its config, and generates with
// the KV cache past its context, greedy decoding picking the full
// forward's argmax.
func TestLlamaTrainSaveGenerate(t *testing.T) {
	m := testModel(t, func(c *Config) { *c = tinyLlama(); c.TiedEmbeddings, c.SlidingWindow = true, 16 })
	tr, err := NewTrainer(m, TrainConfig{Batch: 4, SeqLen: 32, Schedule: Schedule{Peak: 3e-3, Warmup: 3, Total: 20, MinRatio: 0.1}, AdamW: DefaultAdamW(), ClipNorm: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s, err := NewSampler(syntheticText(20000), 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	if err := tr.Train(context.Background(), s, 15, func(st StepStats) { losses = append(losses, st.Loss) }); err != nil {
		t.Fatal(err)
	}
	if !(losses[len(losses)-1] < losses[0]-1) {
		t.Errorf("loss went from %v to %v in 15 steps", losses[0], losses[len(losses)-1])
	}
	path := filepath.Join(t.TempDir(), "llama.safetensors")
	if err := tr.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ck.Model.Config, m.Config) || !slices.Equal(ck.Model.Weights.Data, m.Weights.Data) {
		t.Fatal("checkpoint does not restore the Llama model")
	}
	prompt := Encode("func main() {")
	greedy, err := ck.Model.Generate(context.Background(), prompt, 60, SampleOptions{})
	if err != nil || len(greedy) != 60 {
		t.Fatalf("generate: %v, %d tokens (context %d)", err, len(greedy), m.Config.SeqLen)
	}
	checkGreedyIsArgmax(t, ck.Model, prompt, greedy)
}
