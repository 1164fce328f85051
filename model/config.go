package model

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("model: invalid config")

// AttentionImpl selects the attention kernel of the training graph.
type AttentionImpl string

// Attention implementations. Flash is the default; Naive materializes the
// T×T scores and is kept as the reference.
const (
	AttentionFlash AttentionImpl = "flash"
	AttentionNaive AttentionImpl = "naive"
)

// Config describes a GPT-2 style transformer: pre-LayerNorm blocks, learned
// positional embeddings, a GELU MLP and (by default) an output head tied to
// the token embedding.
type Config struct {
	Vocab    int `json:"vocab_size"`  // token ids are 0…Vocab−1 (256: bytes)
	DModel   int `json:"n_embd"`      // width of the residual stream
	Layers   int `json:"n_layer"`     // transformer blocks
	Heads    int `json:"n_head"`      // query heads; must divide DModel
	KVHeads  int `json:"n_kv_head"`   // key/value heads (GQA); equal to Heads for plain multi-head attention
	SeqLen   int `json:"n_positions"` // learned positions: the longest context
	MLPRatio int `json:"mlp_ratio"`   // MLP width = MLPRatio·DModel

	Dropout        float32       `json:"dropout"`             // residual and attention-output dropout during training
	TiedEmbeddings bool          `json:"tie_word_embeddings"` // the output head is the token embedding (no lm_head)
	LayerNormEps   float32       `json:"layer_norm_epsilon"`  // added to the variance in every LayerNorm
	Attention      AttentionImpl `json:"attention"`           // attention kernel of the training graph and inference
}

// HeadDim is the width of one attention head.
func (c Config) HeadDim() int { return c.DModel / c.Heads }

// QKVWidth is the output width of the fused query/key/value projection.
func (c Config) QKVWidth() int { return (c.Heads + 2*c.KVHeads) * c.HeadDim() }

// Validate reports the first problem with c, wrapping ErrConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"vocab_size", c.Vocab}, {"n_embd", c.DModel}, {"n_layer", c.Layers}, {"n_head", c.Heads},
		{"n_kv_head", c.KVHeads}, {"n_positions", c.SeqLen}, {"mlp_ratio", c.MLPRatio}} {
		if f.v <= 0 {
			return bad("%s must be positive, got %d", f.name, f.v)
		}
	}
	if c.DModel%c.Heads != 0 {
		return bad("%d heads do not divide d_model %d", c.Heads, c.DModel)
	}
	if c.Heads%c.KVHeads != 0 {
		return bad("%d key/value heads do not divide %d heads", c.KVHeads, c.Heads)
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		return bad("dropout must be in [0, 1), got %v", c.Dropout)
	}
	if !(c.LayerNormEps > 0) {
		return bad("layer_norm_epsilon must be positive, got %v", c.LayerNormEps)
	}
	switch c.Attention {
	case AttentionFlash, AttentionNaive:
	default:
		return bad("attention must be %q or %q, got %q", AttentionFlash, AttentionNaive, c.Attention)
	}
	const maxElems = 1 << 31 // one tensor must stay indexable by int32-sized kernels
	if int64(c.Vocab)*int64(c.DModel) > maxElems || int64(c.DModel)*int64(c.MLPRatio)*int64(c.DModel) > maxElems {
		return bad("model too large for one process")
	}
	return nil
}

// Preset is a named standard configuration with its benchmark batch size.
type Preset struct {
	Name   string // "tiny", "small" or "medium"
	Config Config // the model
	Batch  int    // sequences per step in benchmarks and the anchors
}

func gpt(dModel, layers, heads, seqLen int) Config {
	return Config{
		Vocab: 256, DModel: dModel, Layers: layers, Heads: heads, KVHeads: heads, SeqLen: seqLen,
		MLPRatio: 4, TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: AttentionFlash,
	}
}

// presets are the standard sizes of DESIGN.md §1; benchmarks and the
// PyTorch anchors use them exactly.
var presets = map[string]Preset{
	"tiny":   {Name: "tiny", Config: gpt(128, 2, 4, 64), Batch: 8},
	"small":  {Name: "small", Config: gpt(256, 4, 8, 256), Batch: 8},
	"medium": {Name: "medium", Config: gpt(512, 8, 8, 256), Batch: 4},
}

// LookupPreset returns the preset called name ("tiny", "small" or "medium").
func LookupPreset(name string) (Preset, error) {
	p, ok := presets[name]
	if !ok {
		return Preset{}, fmt.Errorf("%w: unknown preset %q (have %s)", ErrConfig, name, strings.Join(PresetNames(), ", "))
	}
	return p, nil
}

// PresetNames lists the preset names in increasing size.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return presets[names[i]].Config.DModel < presets[names[j]].Config.DModel
	})
	return names
}
