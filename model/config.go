package model

import (
	"errors"
	"fmt"
	"math"
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

// Validate reports the first problem with c, wrapping ErrConfig. Besides
// the consistency of the fields it enforces the size limits (MaxVocab…
// MaxParams), so that a valid config can be allocated without overflow.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	for _, f := range []struct {
		name   string
		v, max int
	}{{"vocab_size", c.Vocab, MaxVocab}, {"n_embd", c.DModel, MaxDModel}, {"n_layer", c.Layers, MaxLayers},
		{"n_head", c.Heads, MaxHeads}, {"n_kv_head", c.KVHeads, MaxHeads}, {"n_positions", c.SeqLen, MaxSeqLen},
		{"mlp_ratio", c.MLPRatio, MaxMLPRatio}} {
		if f.v <= 0 {
			return bad("%s must be positive, got %d", f.name, f.v)
		}
		if f.v > f.max {
			return bad("%s is %d, more than the limit %d", f.name, f.v, f.max)
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
	if _, err := c.ParamCount(); err != nil {
		return err
	}
	return nil
}

// Size limits of a Config. They are far above any model this CPU library
// trains, and low enough that every size derived from a valid config (a
// tensor's elements, the parameter count, a checkpoint's bytes) is computed
// without overflow. Heads are further bounded by n_embd, which they divide.
const (
	MaxVocab       = 1 << 20 // vocab_size: 1,048,576 tokens
	MaxDModel      = 1 << 16 // n_embd: 65,536
	MaxLayers      = 1 << 10 // n_layer: 1,024 blocks
	MaxHeads       = 1 << 12 // n_head and n_kv_head: 4,096
	MaxSeqLen      = 1 << 20 // n_positions: 1,048,576
	MaxMLPRatio    = 64      // mlp_ratio
	MaxTensorElems = 1 << 31 // elements of one tensor (parameter or activation)
	MaxParams      = 1 << 36 // parameters of a model (~68.7 G, 256 GiB of float32)
)

// errOverflow is returned by the checked arithmetic helpers.
var errOverflow = errors.New("size overflows int64")

// mulChecked returns a·b for non-negative a and b, or errOverflow.
func mulChecked(a, b int64) (int64, error) {
	if a < 0 || b < 0 {
		return 0, fmt.Errorf("negative size %d·%d", a, b)
	}
	if a != 0 && b > math.MaxInt64/a {
		return 0, errOverflow
	}
	return a * b, nil
}

// addChecked returns a+b for non-negative a and b, or errOverflow.
func addChecked(a, b int64) (int64, error) {
	if a < 0 || b < 0 {
		return 0, fmt.Errorf("negative size %d+%d", a, b)
	}
	if b > math.MaxInt64-a {
		return 0, errOverflow
	}
	return a + b, nil
}

// ParamCount returns the number of parameters c implies (the length of a
// model's Weights), computed with overflow-checked arithmetic and without
// allocating. It returns an error wrapping ErrConfig when a size is not
// positive, a tensor exceeds MaxTensorElems, or the total exceeds MaxParams
// or what an int holds on this platform.
func (c Config) ParamCount() (int64, error) {
	bad := func(format string, args ...any) (int64, error) {
		return 0, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	V, C, T, L, R := int64(c.Vocab), int64(c.DModel), int64(c.SeqLen), int64(c.Layers), int64(c.MLPRatio)
	if V <= 0 || C <= 0 || T <= 0 || L <= 0 || R <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.DModel%c.Heads != 0 {
		return bad("sizes %+v", c)
	}
	var total int64
	var err error
	// tensor adds count tensors of shape dims to total.
	tensor := func(name string, count int64, dims ...int64) {
		if err != nil {
			return
		}
		n := int64(1)
		for _, d := range dims {
			if n, err = mulChecked(n, d); err != nil {
				return
			}
		}
		if n > MaxTensorElems {
			err = fmt.Errorf("%s has %d elements, more than %d", name, n, MaxTensorElems)
			return
		}
		if n, err = mulChecked(n, count); err != nil {
			return
		}
		total, err = addChecked(total, n)
	}
	// The fused QKV width, (Heads + 2·KVHeads)·HeadDim, checked too: an
	// unvalidated config may hold any head counts.
	var Q int64
	Q, err = mulChecked(int64(c.KVHeads), 2)
	if err == nil {
		Q, err = addChecked(Q, int64(c.Heads))
	}
	if err == nil {
		Q, err = mulChecked(Q, C/int64(c.Heads))
	}
	tensor("wte", 1, V, C)
	tensor("wpe", 1, T, C)
	for _, ln := range []string{"ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"} {
		tensor(ln, L, C)
	}
	tensor("c_attn.weight", L, C, Q)
	tensor("c_attn.bias", L, Q)
	tensor("attn.c_proj.weight", L, C, C)
	tensor("attn.c_proj.bias", L, C)
	tensor("c_fc.weight", L, C, R, C)
	tensor("c_fc.bias", L, R, C)
	tensor("mlp.c_proj.weight", L, R, C, C)
	tensor("mlp.c_proj.bias", L, C)
	tensor("ln_f", 2, C)
	if !c.TiedEmbeddings {
		tensor("lm_head", 1, C, V)
	}
	if err != nil {
		return bad("model too large: %w", err)
	}
	if total > MaxParams || total > math.MaxInt {
		return bad("model too large: %d parameters (at most %d on this platform)", total, min(MaxParams, int64(math.MaxInt)))
	}
	return total, nil
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

// checkActivations reports an error when B sequences of T tokens would make
// an activation tensor larger than MaxTensorElems (the logits, the MLP's
// hidden layer, the fused QKV, and for naive attention the T×T scores of
// every head), with overflow-checked arithmetic, so that graph and
// inference constructors fail instead of panicking on huge batches.
func (c Config) checkActivations(B, T int, naive bool) error {
	rows, err := mulChecked(int64(B), int64(T))
	widest := max(int64(c.Vocab), int64(c.MLPRatio)*int64(c.DModel), int64(c.QKVWidth()), int64(c.DModel))
	var n int64
	if err == nil {
		n, err = mulChecked(rows, widest)
	}
	if err == nil && naive {
		var scores int64
		if scores, err = mulChecked(rows, int64(c.Heads)*int64(T)); err == nil {
			n = max(n, scores)
		}
	}
	if err != nil || n > MaxTensorElems {
		return fmt.Errorf("%w: %d sequences of %d tokens need activations of more than %d elements", ErrConfig, B, T, int64(MaxTensorElems))
	}
	return nil
}
