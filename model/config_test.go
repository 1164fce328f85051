package model

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestPresetsMatchDesign(t *testing.T) {
	// The documented preset sizes (Preset's doc): vocab, d_model, layers,
	// heads, seq, batch, ~params.
	for _, c := range []struct {
		name                   string
		d, layers, heads, t, b int
		paramsLo, paramsHi     int
	}{
		{"tiny", 128, 2, 4, 64, 8, 430_000, 450_000},
		{"small", 256, 4, 8, 256, 8, 3_200_000, 3_400_000},
		{"medium", 512, 8, 8, 256, 4, 25_000_000, 26_000_000},
	} {
		p, err := LookupPreset(c.name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := p.Config
		if cfg.Vocab != 256 || cfg.DModel != c.d || cfg.Layers != c.layers || cfg.Heads != c.heads || cfg.SeqLen != c.t || p.Batch != c.b {
			t.Errorf("%s: %+v batch %d", c.name, cfg, p.Batch)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		ps, err := NewParamSet(cfg.paramSpecs())
		if err != nil {
			t.Fatal(err)
		}
		if n := ps.Len(); n < c.paramsLo || n > c.paramsHi {
			t.Errorf("%s: %d parameters", c.name, n)
		}
	}
	if got := strings.Join(PresetNames(), ","); got != "tiny,small,medium" {
		t.Errorf("PresetNames = %s", got)
	}
	if _, err := LookupPreset("huge"); !errors.Is(err, ErrConfig) {
		t.Errorf("unknown preset: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	base := presets["tiny"].Config
	for _, c := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Heads = 3 }, "3 heads do not divide d_model 128"},
		{func(c *Config) { c.KVHeads = 3 }, "3 key/value heads do not divide 4 heads"},
		{func(c *Config) { c.DModel = 0 }, "n_embd must be positive"},
		{func(c *Config) { c.Vocab = -1 }, "vocab_size must be positive"},
		{func(c *Config) { c.Layers = 0 }, "n_layer must be positive"},
		{func(c *Config) { c.Dropout = 1 }, "dropout"},
		{func(c *Config) { c.LayerNormEps = 0 }, "layer_norm_epsilon"},
		{func(c *Config) { c.Attention = "fast" }, "attention must be"},
	} {
		cfg := base
		c.mut(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an ErrConfig mentioning %q", err, c.want)
		}
	}
	gqa := base
	gqa.KVHeads = 2
	if err := gqa.Validate(); err != nil {
		t.Errorf("GQA config rejected: %v", err)
	}
	if gqa.QKVWidth() != (4+2*2)*32 {
		t.Errorf("QKVWidth = %d", gqa.QKVWidth())
	}
}

func TestParamNamesAreGPT2(t *testing.T) {
	cfg := presets["tiny"].Config
	ps, err := NewParamSet(cfg.paramSpecs())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"transformer.wte.weight", "transformer.wpe.weight",
		"transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
		"transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_proj.bias",
		"transformer.h.0.ln_2.weight", "transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_proj.weight",
		"transformer.ln_f.weight", "transformer.ln_f.bias",
	} {
		if ps.Get(name) == nil {
			t.Errorf("missing %s", name)
		}
	}
	if w := ps.Get("transformer.h.0.attn.c_attn.weight"); w.Shape[0] != 128 || w.Shape[1] != 384 || !w.Decay {
		t.Errorf("c_attn weight: shape %v decay %v (want [in, out] as Conv1D, decayed)", w.Shape, w.Decay)
	}
	if ps.Get("transformer.wte.weight").Decay || ps.Get("transformer.h.0.ln_1.weight").Decay || ps.Get("transformer.h.0.mlp.c_fc.bias").Decay {
		t.Error("embeddings, LayerNorm and biases must not decay")
	}
	if ps.Get(NameHead+".weight") != nil {
		t.Error("tied model has a separate head")
	}
}

func TestInitGPT2(t *testing.T) {
	cfg := presets["small"].Config
	a, _ := NewParamSet(cfg.paramSpecs())
	b, _ := NewParamSet(cfg.paramSpecs())
	initWeights(a, cfg, 7)
	initWeights(b, cfg, 7)
	for i := range a.Data {
		if a.Data[i] != b.Data[i] {
			t.Fatal("same seed, different weights")
		}
	}
	std := func(x []float32) float64 {
		var s float64
		for _, v := range x {
			s += float64(v) * float64(v)
		}
		return math.Sqrt(s / float64(len(x)))
	}
	if s := std(a.Get("transformer.h.0.mlp.c_fc.weight").Data); s < 0.0195 || s > 0.0205 {
		t.Errorf("c_fc std %v, want 0.02", s)
	}
	if s := std(a.Get("transformer.h.0.mlp.c_proj.weight").Data); s < 0.00697 || s > 0.00717 { // 0.02/√(2·4 layers)
		t.Errorf("c_proj std %v, want 0.00707", s)
	}
	for _, v := range a.Get("transformer.h.2.ln_2.weight").Data {
		if v != 1 {
			t.Fatal("LayerNorm gain not 1")
		}
	}
	for _, v := range a.Get("transformer.h.2.attn.c_attn.bias").Data {
		if v != 0 {
			t.Fatal("bias not 0")
		}
	}
}
