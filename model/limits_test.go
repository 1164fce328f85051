package model

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// Every size field has an upper limit, and the parameter count is computed
// with overflow checks: configs that would overflow int64 or describe
// absurd models are refused by Validate, never allocated.
func TestConfigSizeLimits(t *testing.T) {
	base := presets["tiny"].Config
	for _, c := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Vocab = MaxVocab + 1 }, "vocab_size is 1048577, more than the limit"},
		{func(c *Config) { c.DModel = MaxDModel * 2 }, "n_embd is"},
		{func(c *Config) { c.Layers = 1_000_000_000 }, "n_layer is 1000000000, more than the limit 1024"},
		{func(c *Config) { c.Heads, c.KVHeads = MaxHeads*2, MaxHeads*2 }, "n_head is"},
		{func(c *Config) { c.KVHeads = MaxHeads + 1 }, "n_kv_head is"},
		{func(c *Config) { c.SeqLen = 1<<61 + 1 }, "n_positions is 2305843009213693953"},
		{func(c *Config) { c.MLPRatio = 1 << 40 }, "mlp_ratio is"},
		// Each within its limit, one tensor too large (wpe: 2^20·2^14).
		{func(c *Config) { c.SeqLen, c.DModel = MaxSeqLen, 1<<14 }, "wpe.weight has 17179869184 elements"},
		// Each tensor fits, the whole model does not: 1024 layers of
		// 12·16384² parameters each.
		{func(c *Config) { c.Layers, c.DModel, c.MLPRatio = MaxLayers, 1<<14, 4 }, "model too large"},
	} {
		cfg := base
		c.mut(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an ErrConfig mentioning %q", cfg, err, c.want)
		}
		if _, err := New(cfg, 1); !errors.Is(err, ErrConfig) {
			t.Errorf("New accepted %+v: %v", cfg, err)
		}
	}
	// The audit's config: 2^61+1 positions of width 4 used to overflow the
	// byte count and pass.
	huge := Config{Vocab: 256, DModel: 4, Layers: 1, Heads: 1, KVHeads: 1, SeqLen: 1<<61 + 1, MLPRatio: 4, LayerNormEps: 1e-5, Attention: AttentionFlash}
	if err := huge.Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("2^61+1 positions: %v", err)
	}
}

// ParamCount is safe on configs that never went through Validate, and
// agrees with the parameters a model actually allocates.
func TestParamCount(t *testing.T) {
	for _, cfg := range []Config{
		{Vocab: 1 << 62, DModel: 1 << 62, Layers: 1, Heads: 1, KVHeads: 1, SeqLen: 1, MLPRatio: 1},
		{Vocab: 1, DModel: 4, Layers: math.MaxInt, Heads: 1, KVHeads: 1, SeqLen: 1, MLPRatio: 1},
		{Vocab: 1, DModel: 4, Layers: 1, Heads: 1, KVHeads: math.MaxInt, SeqLen: 1, MLPRatio: 1},
		{Vocab: 1, DModel: 4, Layers: 1, Heads: 1, KVHeads: 1, SeqLen: 1, MLPRatio: math.MaxInt},
		{Vocab: 1, DModel: 0, Layers: 1, Heads: 1, KVHeads: 1, SeqLen: 1, MLPRatio: 1},
	} {
		if n, err := cfg.ParamCount(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %d parameters, error %v", cfg, n, err)
		}
	}
	for _, cfg := range []Config{presets["tiny"].Config, presets["medium"].Config,
		{Vocab: 300, DModel: 48, Layers: 3, Heads: 4, KVHeads: 2, SeqLen: 20, MLPRatio: 3, LayerNormEps: 1e-5, Attention: AttentionNaive}} {
		n, err := cfg.ParamCount()
		if err != nil {
			t.Fatal(err)
		}
		ps, err := NewParamSet(cfg.paramSpecs())
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(ps.Len()) {
			t.Errorf("%+v: ParamCount %d, allocated %d", cfg, n, ps.Len())
		}
	}
}

func TestNewParamSetRefusesHugeOrBadSpecs(t *testing.T) {
	for _, specs := range [][]ParamSpec{
		{{Name: "a", Shape: []int{1 << 40, 1 << 40}}},                                                          // product overflows int64
		{{Name: "a", Shape: []int{1 << 31, 1 << 31, 1 << 31}}},                                                 // and again
		{{Name: "a", Shape: []int{1 << 30, 1 << 30}}},                                                          // 2^60 elements: over MaxParams
		{{Name: "a", Shape: []int{1 << 35}}, {Name: "b", Shape: []int{1 << 35}}, {Name: "c", Shape: []int{1}}}, // the sum is over MaxParams
		{{Name: "a", Shape: []int{math.MaxInt}}, {Name: "b", Shape: []int{math.MaxInt}}},                       // the sum overflows
		{{Name: "a", Shape: []int{2, 0}}},
		{{Name: "", Shape: []int{2}}},
		{{Name: "a", Shape: []int{2}}, {Name: "a", Shape: []int{3}}},
	} {
		if ps, err := NewParamSet(specs); err == nil {
			t.Errorf("%v: allocated %d elements", specs, ps.Len())
		}
	}
}

// Replicas and inference sessions refuse batches whose activations would
// not fit one tensor, instead of panicking in make.
func TestConstructorsRefuseHugeBatches(t *testing.T) {
	m := testModel(t, nil)
	for _, B := range []int{math.MaxInt, 1 << 40, MaxTensorElems / 37} {
		if r, err := m.NewReplica(B, 37); !errors.Is(err, ErrConfig) {
			t.Errorf("replica of %d sequences: %v", B, err)
			if r != nil {
				r.Close()
			}
		}
		if _, err := m.NewInference(B, 37); !errors.Is(err, ErrConfig) {
			t.Errorf("inference for %d sequences: %v", B, err)
		}
	}
	naive := testModel(t, func(c *Config) { c.Attention = AttentionNaive })
	// 4 heads of 37×37 scores per sequence: 5476 per sequence; logits 256 per row.
	if _, err := naive.NewReplica(MaxTensorElems/(37*256)+1, 37); !errors.Is(err, ErrConfig) {
		t.Errorf("naive replica over the limit: %v", err)
	}
}

// checkpointWithConfig writes the tensors of a small valid model under a
// header whose config is replaced by cfg (any JSON): what an attacker can
// produce in a few hundred bytes of header.
func checkpointWithConfig(t testing.TB, dir, name string, cfg string, training bool) []byte {
	t.Helper()
	m, err := New(Config{Vocab: 256, DModel: 8, Layers: 1, Heads: 2, KVHeads: 2, SeqLen: 4, MLPRatio: 2, TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: AttentionFlash}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var tensors []safetensors.Tensor
	for _, p := range m.Weights.Params {
		tensors = append(tensors, safetensors.F32Tensor(p.Name, shape64(p.Shape), p.Data))
	}
	meta := map[string]string{metaFormat: formatName, metaConfig: cfg}
	if training {
		adam, _ := json.Marshal(DefaultAdamW())
		meta[metaStep], meta[metaAdamW], meta[metaData] = "3", string(adam), ""
	}
	path := filepath.Join(dir, name)
	if err := safetensors.WriteFile(path, tensors, meta); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hostileConfigs are configs of crafted checkpoints: the audit's int64
// overflow, layer counts that used to build specs per layer before any size
// check, and a valid but large config the file cannot hold.
var hostileConfigs = map[string]string{
	"positions-2^61+1": `{"vocab_size":256,"n_embd":4,"n_layer":1,"n_head":1,"n_kv_head":1,"n_positions":2305843009213693953,"mlp_ratio":4,"tie_word_embeddings":true,"layer_norm_epsilon":1e-5,"attention":"flash"}`,
	"layers-1e9":       `{"vocab_size":256,"n_embd":8,"n_layer":1000000000,"n_head":2,"n_kv_head":2,"n_positions":4,"mlp_ratio":2,"tie_word_embeddings":true,"layer_norm_epsilon":1e-5,"attention":"flash"}`,
	"layers-max":       `{"vocab_size":256,"n_embd":8,"n_layer":1024,"n_head":2,"n_kv_head":2,"n_positions":4,"mlp_ratio":2,"tie_word_embeddings":true,"layer_norm_epsilon":1e-5,"attention":"flash"}`,
	"vocab-2^62":       `{"vocab_size":4611686018427387904,"n_embd":8,"n_layer":1,"n_head":2,"n_kv_head":2,"n_positions":4,"mlp_ratio":2,"tie_word_embeddings":true,"layer_norm_epsilon":1e-5,"attention":"flash"}`,
	"ratio-2^60":       `{"vocab_size":256,"n_embd":8,"n_layer":1,"n_head":2,"n_kv_head":2,"n_positions":4,"mlp_ratio":1152921504606846976,"tie_word_embeddings":true,"layer_norm_epsilon":1e-5,"attention":"flash"}`,
	"large-valid":      `{"vocab_size":256,"n_embd":4096,"n_layer":64,"n_head":32,"n_kv_head":32,"n_positions":4096,"mlp_ratio":4,"tie_word_embeddings":true,"layer_norm_epsilon":1e-5,"attention":"flash"}`,
}

// Crafted headers are refused with ErrCheckpoint before anything is built
// from the config: loading allocates about the file's size, not the size
// the config claims (1024 layers used to build 12 specs per layer, 1e9
// layers exhausted memory, 2^61+1 positions panicked in makeslice).
func TestLoadCheckpointRefusesHugeConfigs(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range hostileConfigs {
		for _, training := range []bool{false, true} {
			file := checkpointWithConfig(t, dir, name, cfg, training)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := LoadCheckpoint(filepath.Join(dir, name))
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrCheckpoint) {
				t.Errorf("%s (training %v): %v, want ErrCheckpoint", name, training, err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(4*len(file)+1<<16) {
				t.Errorf("%s (training %v): refusing a %d-byte file allocated %d bytes", name, training, len(file), alloc)
			}
		}
	}
	// The same writer with the real config loads: the refusals above are
	// about the configs.
	good := `{"vocab_size":256,"n_embd":8,"n_layer":1,"n_head":2,"n_kv_head":2,"n_positions":4,"mlp_ratio":2,"tie_word_embeddings":true,"layer_norm_epsilon":1e-5,"attention":"flash"}`
	checkpointWithConfig(t, dir, "good", good, false)
	if _, err := LoadCheckpoint(filepath.Join(dir, "good")); err != nil {
		t.Errorf("the control file: %v", err)
	}
}
