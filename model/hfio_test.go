package model

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/stretchr/testify/require"
)

// hfKind is one of the golden checkpoints: a random model of cfg saved in
// Hugging Face layout with the given dtype and shard size.
type hfKind struct {
	name   string
	cfg    Config
	dtype  string
	shard  int64
	openAI bool // GPT-2 as openai-community/gpt2 stores it: no prefix, attention buffers present
}

func hfKinds() []hfKind {
	gpt := Config{Family: FamilyGPT2, ModelType: "gpt2", Vocab: 61, DModel: 24, Layers: 2, Heads: 3, KVHeads: 3, SeqLen: 16,
		MLPRatio: 4, TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: AttentionFlash}
	llama := Config{Family: FamilyLlama, ModelType: "llama", Vocab: 53, DModel: 48, Layers: 2, Heads: 6, KVHeads: 2, SeqLen: 32,
		Intermediate: 40, LayerNormEps: 1e-5, RopeTheta: 10000, Attention: AttentionFlash}
	smol := llama
	smol.Heads, smol.KVHeads, smol.TiedEmbeddings, smol.RopeTheta = 3, 1, true, 100000
	qwen := llama
	qwen.ModelType, qwen.Heads, qwen.KVHeads, qwen.AttnBias, qwen.TiedEmbeddings, qwen.LayerNormEps, qwen.RopeTheta = "qwen2", 4, 2, true, true, 1e-6, 1e6
	return []hfKind{
		{name: "gpt2-openai", cfg: gpt, dtype: "float32", openAI: true},
		{name: "llama-gqa-bf16-shards", cfg: llama, dtype: "bfloat16", shard: 40_000},
		{name: "smollm-tied", cfg: smol, dtype: "float16"},
		{name: "qwen2-bias-bf16", cfg: qwen, dtype: "bfloat16"},
	}
}

// writeKind writes kind's random model to dir. Biases and norm gains are
// random too, so that a misplaced one changes the logits.
func writeKind(t testing.TB, k hfKind, dir string) {
	m, err := New(k.cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, p := range m.Weights.Params {
		if len(p.Shape) == 1 {
			for i := range p.Data {
				p.Data[i] = float32(rng.NormFloat64()*0.1) + map[bool]float32{true: 1, false: 0}[strings.HasSuffix(p.Name, ".weight")]
			}
		}
	}
	opts := []SaveOption{WithDType(k.dtype)}
	if k.shard > 0 {
		opts = append(opts, WithMaxShardSize(k.shard))
	}
	if err := m.SavePretrained(dir, opts...); err != nil {
		t.Fatal(err)
	}
	if !k.openAI {
		return
	}
	// Rewrite as OpenAI's file: names without "transformer.", plus the
	// attention buffers, and n_ctx instead of n_positions in the config.
	var ts []safetensors.Tensor
	for _, p := range m.Weights.Params {
		ts = append(ts, safetensors.F32Tensor(strings.TrimPrefix(p.Name, "transformer."), shape64(p.Shape), p.Data))
	}
	T := k.cfg.SeqLen
	mask := make([]float32, T*T)
	for i := range T {
		for j := 0; j <= i; j++ {
			mask[i*T+j] = 1
		}
	}
	for i := range k.cfg.Layers {
		ts = append(ts, safetensors.F32Tensor(fmt.Sprintf("h.%d.attn.bias", i), []int64{1, 1, int64(T), int64(T)}, mask),
			safetensors.F32Tensor(fmt.Sprintf("h.%d.attn.masked_bias", i), nil, []float32{-1e4}))
	}
	if err := safetensors.WriteFile(filepath.Join(dir, hfWeightsFile), ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	cj, _ := os.ReadFile(filepath.Join(dir, hfConfigFile))
	var c map[string]any
	json.Unmarshal(cj, &c)
	c["n_ctx"] = c["n_positions"]
	delete(c, "n_positions")
	cj, _ = json.Marshal(c)
	os.WriteFile(filepath.Join(dir, hfConfigFile), cj, 0o644)
}

// referenceLogits runs testdata/hf_reference.py on dirs (one Python start:
// importing torch dominates); it skips when Debian's torch is absent,
// except in CI.
func referenceLogits(t *testing.T, ids []int32, dirs ...string) [][]float64 {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 with torch is required in CI: %v", err)
		}
		t.Skipf("python3 with torch not available: %v", err)
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	cmd := exec.Command(py, append([]string{"testdata/hf_reference.py", strings.Join(s, ",")}, dirs...)...)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hf_reference.py: %v", err)
	}
	var v [][]float64
	if err := json.Unmarshal(out, &v); err != nil || len(v) != len(dirs) {
		t.Fatal(err)
	}
	return v
}

// maxRelDiff is max|a−b| over max|b|.
func maxRelDiff(a []float32, b []float64) float64 {
	var d, s float64
	for i := range b {
		d = max(d, math.Abs(float64(a[i])-b[i]))
		s = max(s, math.Abs(b[i]))
	}
	return d / s
}

// TestHFGolden: for each kind, galleon's logits on the loaded directory
// match the independent float64 forward of testdata/hf_reference.py within
// 1e-4 relative, SavePretrained's directory gives the reference the same
// logits, and Load → Save → Load is bit-identical.
func TestHFGolden(t *testing.T) {
	for _, k := range hfKinds() {
		t.Run(k.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "in")
			writeKind(t, k, dir)
			if k.shard > 0 {
				if _, err := os.Stat(filepath.Join(dir, hfIndexFile)); err != nil {
					t.Fatalf("expected shards: %v", err)
				}
			}
			m, err := LoadPretrained(dir)
			if err != nil {
				t.Fatal(err)
			}
			if m.hf.dtype != k.dtype {
				t.Fatalf("dtype %q, want %q", m.hf.dtype, k.dtype)
			}
			out := filepath.Join(t.TempDir(), "out")
			if err := m.SavePretrained(out); err != nil {
				t.Fatal(err)
			}
			m2, err := LoadPretrained(out)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range m.Weights.Data {
				if math.Float32bits(v) != math.Float32bits(m2.Weights.Data[i]) {
					t.Fatalf("reloaded weight %d differs: %v vs %v", i, v, m2.Weights.Data[i])
				}
			}
			if m2.Config != m.Config && fmt.Sprint(m2.Config) != fmt.Sprint(m.Config) {
				t.Fatalf("config %+v, reloaded %+v", m.Config, m2.Config)
			}
			ids := []int32{3, 17, 0, 42, 9, 9, 50, 1, 33, 12, 5}
			got, err := m.Logits(ids, 1, len(ids))
			if err != nil {
				t.Fatal(err)
			}
			refs := referenceLogits(t, ids, dir, out)
			for i, d := range []string{dir, out} {
				ref := refs[i]
				if len(ref) != len(got) {
					t.Fatalf("%d reference logits, %d from galleon", len(ref), len(got))
				}
				rel := maxRelDiff(got, ref)
				t.Logf("%s: max relative difference %.2e", filepath.Base(d), rel)
				if rel > 1e-4 {
					t.Fatalf("%s: logits differ from the reference by %.2e relative", d, rel)
				}
			}
		})
	}
}

func TestF16Widening(t *testing.T) {
	for h := range 1 << 16 {
		f := safetensors.F16ToFloat32(uint16(h))
		if f != f { // NaN keeps its payload through a round trip
			if back := f32ToF16(f); back != uint16(h)|0x200 {
				t.Fatalf("NaN %#04x → %#04x", h, back)
			}
			continue
		}
		if back := f32ToF16(f); back != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, f, back)
		}
	}
	// Narrowing rounds to nearest even: compare with a float64 search.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		f := math.Float32frombits(rng.Uint32())
		if f != f {
			continue
		}
		h := f32ToF16(f)
		got := float64(safetensors.F16ToFloat32(h))
		// The neighbours of h on the half grid must not be strictly closer.
		for _, nb := range []uint16{h - 1, h + 1} {
			if nb&0x7c00 == 0x7c00 && nb&0x3ff != 0 || (h&0x7fff == 0 && nb == h-1) {
				continue
			}
			alt := float64(safetensors.F16ToFloat32(nb))
			if math.IsInf(got, 0) && math.Abs(float64(f)) < 65520 || math.Abs(alt-float64(f)) < math.Abs(got-float64(f)) && !math.IsInf(got, 0) {
				t.Fatalf("%v → %v, but %v is closer", f, got, alt)
			}
		}
	}
}

func TestBF16Rounding(t *testing.T) {
	cases := map[uint32]uint16{
		0x3f800000: 0x3f80, // 1
		0x3f808000: 0x3f80, // tie, even stays
		0x3f818000: 0x3f82, // tie, odd rounds up
		0x3f808001: 0x3f81, // above the tie
		0x7f7fffff: 0x7f80, // overflows to inf
		0xff800000: 0xff80, // -inf
	}
	for in, want := range cases {
		if got := kernels.Float32ToBF16(math.Float32frombits(in)); got != want {
			t.Errorf("%#08x → %#04x, want %#04x", in, got, want)
		}
	}
	if got := kernels.Float32ToBF16(float32(math.NaN())); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("NaN → %#04x", got)
	}
}

func TestHFConfigParsing(t *testing.T) {
	cases := map[string]string{
		`{"model_type":"bert"}`: "supported: gpt2, llama, mistral, qwen2",
		`{"n_embd":8}`:          "no model_type",
		`{"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"n_positions":4,"vocab_size":5,"activation_function":"gelu"}`:                                                                                  "tanh form",
		`{"model_type":"llama","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":5,"max_position_embeddings":8,"rope_scaling":{"rope_type":"yarn","factor":2}}`: `"yarn" is not supported`,
		`{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":5,"max_position_embeddings":8}`:                                                                      `no "intermediate_size"`,
		`{"model_type":"llama","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":5,"max_position_embeddings":8,"hidden_act":"gelu"}`:                            "SwiGLU",
	}
	for in, want := range cases {
		if _, _, err := parseHFConfig([]byte(in)); err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrConfig) {
			t.Errorf("%s: error %v, want one containing %q", in, err, want)
		}
	}
	c, _, err := parseHFConfig([]byte(`{"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"n_ctx":4,"vocab_size":5,"n_inner":null,"activation_function":"gelu_new","resid_pdrop":0}`))
	if err != nil || c.SeqLen != 4 || c.MLPWidth() != 32 || !c.TiedEmbeddings {
		t.Fatalf("gpt2 legacy n_ctx: %+v %v", c, err)
	}
	c, _, err = parseHFConfig([]byte(`{"model_type":"mistral","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":5,"max_position_embeddings":64,"sliding_window":16,
		"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":32}}`))
	if err != nil || c.SlidingWindow != 16 || c.KVHeads != 1 || c.RopeScaling == nil || c.RopeScaling.Type != "llama3" {
		t.Fatalf("mistral: %+v %v", c, err)
	}
}

// TestLoadPretrainedErrors: each broken directory gives an error naming
// its problem.
func TestLoadPretrainedErrors(t *testing.T) {
	k := hfKinds()[1] // llama, two shards
	base := filepath.Join(t.TempDir(), "base")
	writeKind(t, k, base)
	copyDir := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "m")
		os.MkdirAll(d, 0o755)
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(base, e.Name()))
			os.WriteFile(filepath.Join(d, e.Name()), b, 0o644)
		}
		return d
	}
	shard2 := filepath.Join("model-00002-of-00002.safetensors")
	cases := []struct {
		name, want string
		edit       func(d string)
	}{
		{"pytorch only", "pytorch_model.bin", func(d string) {
			os.Remove(filepath.Join(d, hfIndexFile))
			os.WriteFile(filepath.Join(d, "pytorch_model.bin"), []byte("PK"), 0o644)
		}},
		{"missing tensor", `"model.layers.2.input_layernorm.weight" is missing`, func(d string) {
			c, _ := os.ReadFile(filepath.Join(d, hfConfigFile))
			os.WriteFile(filepath.Join(d, hfConfigFile), []byte(strings.Replace(string(c), `"num_hidden_layers": 2`, `"num_hidden_layers": 3`, 1)), 0o644)
		}},
		{"index lies", "which does not hold it", func(d string) {
			b, _ := os.ReadFile(filepath.Join(d, hfIndexFile))
			os.WriteFile(filepath.Join(d, hfIndexFile), []byte(strings.Replace(string(b), `"model.norm.weight"`, `"model.norm.weightX"`, 1)), 0o644)
		}},
		{"shard truncated", "corrupt", func(d string) {
			p := filepath.Join(d, shard2)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-3], 0o644)
		}},
		{"path escape", "not a file name", func(d string) {
			b, _ := os.ReadFile(filepath.Join(d, hfIndexFile))
			os.WriteFile(filepath.Join(d, hfIndexFile), []byte(strings.Replace(string(b), `"model-00002`, `"../model-00002`, 1)), 0o644)
		}},
		{"wrong shape", "has shape", func(d string) {
			c, _ := os.ReadFile(filepath.Join(d, hfConfigFile))
			os.WriteFile(filepath.Join(d, hfConfigFile), []byte(strings.Replace(string(c), `"intermediate_size": 40`, `"intermediate_size": 41`, 1)), 0o644)
		}},
		{"unsupported type", "supported: gpt2, llama", func(d string) {
			c, _ := os.ReadFile(filepath.Join(d, hfConfigFile))
			os.WriteFile(filepath.Join(d, hfConfigFile), []byte(strings.Replace(string(c), `"model_type": "llama"`, `"model_type": "phi3"`, 1)), 0o644)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := copyDir(t)
			c.edit(d)
			_, err := LoadPretrained(d)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestSavePretrainedReplaces: saving over an existing directory replaces
// it and leaves nothing beside it.
func TestSavePretrainedReplaces(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "m")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "stale"), []byte("x"), 0o644)
	m, err := New(hfKinds()[0].cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SavePretrained(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 {
		t.Fatalf("parent holds %v", ents)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); err == nil {
		t.Fatal("old directory's file survived")
	}
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, hfConfigFile))
	if err := json.Unmarshal(b, &cfg); err != nil || cfg["torch_dtype"] != "float32" || fmt.Sprint(cfg["architectures"]) != "[GPT2LMHeadModel]" {
		t.Fatalf("config.json %s: %v", b, err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, hfWeightsFile))
	n := binary.LittleEndian.Uint64(raw)
	if n%8 != 0 || !strings.Contains(string(raw[8:8+n]), `"__metadata__":{"format":"pt"}`) {
		t.Fatalf("header %s", raw[8:8+n])
	}
}

// WithSideFiles copies the side files present in the source directory
// inside the same atomic write; a side file that is not a regular file (a
// directory here) fails the save and leaves the old directory as it was,
// with nothing beside it.
func TestSavePretrainedWithSideFiles(t *testing.T) {
	m, err := New(hfKinds()[0].cfg, 1)
	require.NoError(t, err)
	from := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(from, "tokenizer.json"), []byte(`{"model":{}}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(from, "generation_config.json"), []byte(`{"eos_token_id":2}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(from, "unrelated.txt"), []byte("not a side file"), 0o644))
	parent := t.TempDir()
	dir := filepath.Join(parent, "m")
	require.NoError(t, m.SavePretrained(dir, WithSideFiles(from)))
	got, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	require.NoError(t, err)
	require.Equal(t, `{"model":{}}`, string(got))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{hfConfigFile, hfWeightsFile, "tokenizer.json", "generation_config.json"}, names)

	require.NoError(t, os.Mkdir(filepath.Join(from, "tokenizer.model"), 0o755))
	err = m.SavePretrained(dir, WithDType("bfloat16"), WithSideFiles(from))
	require.ErrorIs(t, err, safetensors.ErrNotRegular)
	cfg, err := os.ReadFile(filepath.Join(dir, hfConfigFile))
	require.NoError(t, err)
	require.Contains(t, string(cfg), `"torch_dtype": "float32"`, "the failed save changed the old directory")
	ents, _ = os.ReadDir(parent)
	require.Len(t, ents, 1, "the failed save left files beside the directory")
	require.Error(t, m.SavePretrained(dir, WithSideFiles("")))
}

// FuzzLoadPretrained feeds mutated config.json, index and weight files to
// the directory loader: it must return an error or a valid model, never
// panic.
func FuzzLoadPretrained(f *testing.F) {
	for _, k := range hfKinds()[:2] {
		dir := filepath.Join(f.TempDir(), k.name)
		writeKind(f, k, dir)
		cj, _ := os.ReadFile(filepath.Join(dir, hfConfigFile))
		idx, _ := os.ReadFile(filepath.Join(dir, hfIndexFile))
		w, err := os.ReadFile(filepath.Join(dir, hfWeightsFile))
		if err != nil {
			w, _ = os.ReadFile(filepath.Join(dir, "model-00001-of-00002.safetensors"))
		}
		f.Add(cj, idx, w)
		f.Add(cj, idx, w[:len(w)/2])
	}
	f.Fuzz(func(t *testing.T, cfg, idx, weights []byte) {
		if len(weights) > 1<<20 {
			return
		}
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, hfConfigFile), cfg, 0o644)
		if len(idx) > 0 {
			os.WriteFile(filepath.Join(d, hfIndexFile), idx, 0o644)
			os.WriteFile(filepath.Join(d, "model-00001-of-00002.safetensors"), weights, 0o644)
			os.WriteFile(filepath.Join(d, "model-00002-of-00002.safetensors"), weights, 0o644)
		} else {
			os.WriteFile(filepath.Join(d, hfWeightsFile), weights, 0o644)
		}
		m, err := LoadPretrained(d)
		if err != nil {
			return
		}
		if err := m.Config.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
	})
}

// ReadPretrainedConfig gives the Config LoadPretrained builds, for every
// kind of directory, and the config errors LoadPretrained gives.
func TestReadPretrainedConfig(t *testing.T) {
	for _, k := range hfKinds() {
		t.Run(k.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "m")
			writeKind(t, k, d)
			cfg, err := ReadPretrainedConfig(d)
			if err != nil {
				t.Fatal(err)
			}
			m, err := LoadPretrained(d)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg, m.Config) {
				t.Fatalf("config %+v, LoadPretrained's %+v", cfg, m.Config)
			}
		})
	}
	d := t.TempDir()
	if _, err := ReadPretrainedConfig(d); err == nil || !strings.Contains(err.Error(), hfConfigFile) {
		t.Fatalf("no config.json: %v", err)
	}
	os.WriteFile(filepath.Join(d, hfConfigFile), []byte(`{"model_type": "phi3"}`), 0o644)
	if _, err := ReadPretrainedConfig(d); !errors.Is(err, ErrConfig) {
		t.Fatalf("unsupported type: %v, want ErrConfig", err)
	}
}
