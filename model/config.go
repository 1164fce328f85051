package model

import (
	"errors"
	"fmt"
	"github.com/galleon-ml/galleon/internal/nn"
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

// Config describes a decoder-only transformer of one of two families.
//
// FamilyGPT2 (the default when Family is empty, as in galleon's older
// checkpoints) is GPT-2: pre-LayerNorm blocks, learned positional
// embeddings, a fused q|k|v projection, a GELU MLP, biases on every block
// linear and (by default) an output head tied to the token embedding.
//
// FamilyLlama (Hugging Face's llama, mistral and qwen2) has RMSNorm, rotary
// positions (RoPE, rotate-half), separate q, k and v projections, a SwiGLU
// MLP, biases as AttnBias, AttnOutBias and MLPBias say, and optionally
// Mistral's sliding-window attention.
type Config struct {
	Vocab    int `json:"vocab_size"`  // token ids are 0…Vocab−1 (256: bytes)
	DModel   int `json:"n_embd"`      // width of the residual stream
	Layers   int `json:"n_layer"`     // transformer blocks
	Heads    int `json:"n_head"`      // query heads
	KVHeads  int `json:"n_kv_head"`   // key/value heads (GQA); equal to Heads for plain multi-head attention
	SeqLen   int `json:"n_positions"` // the longest context (GPT-2: learned positions; Llama: max_position_embeddings)
	MLPRatio int `json:"mlp_ratio"`   // MLP width = MLPRatio·DModel when Intermediate is 0

	Dropout        float32       `json:"dropout"`             // residual and attention-output dropout during training
	TiedEmbeddings bool          `json:"tie_word_embeddings"` // the output head is the token embedding (no lm_head)
	LayerNormEps   float32       `json:"layer_norm_epsilon"`  // eps of the family's norm (LayerNorm, or RMSNorm's rms_norm_eps)
	Attention      AttentionImpl `json:"attention"`           // attention kernel of the training graph and inference

	Family        string       `json:"family"`                 // FamilyGPT2 (also when empty) or FamilyLlama
	ModelType     string       `json:"model_type"`             // Hugging Face model_type: gpt2, llama, mistral or qwen2 (empty: the family's name)
	Intermediate  int          `json:"intermediate_size"`      // MLP width; 0 means MLPRatio·DModel
	HeadDimension int          `json:"head_dim"`               // width of one head; 0 means DModel/Heads (see HeadDim)
	RopeTheta     float64      `json:"rope_theta"`             // RoPE base (Llama family only)
	RopeScaling   *RopeScaling `json:"rope_scaling,omitempty"` // RoPE frequency scaling (Llama family only); nil for none
	AttnBias      bool         `json:"attention_bias"`         // Llama family: q, k and v projections have biases (GPT-2 always has them)
	AttnOutBias   bool         `json:"attention_out_bias"`     // Llama family: o_proj has a bias (GPT-2's c_proj always has one)
	MLPBias       bool         `json:"mlp_bias"`               // Llama family: gate, up and down projections have biases (GPT-2 always has them)
	SlidingWindow int          `json:"sliding_window"`         // Llama family: each query sees at most this many keys (itself included); 0 for no limit
}

// Families of Config.Family.
const (
	FamilyGPT2  = "gpt2"
	FamilyLlama = "llama"
)

// modelTypes maps each supported Hugging Face model_type to its family.
var modelTypes = map[string]string{"gpt2": FamilyGPT2, "llama": FamilyLlama, "mistral": FamilyLlama, "qwen2": FamilyLlama}

// ModelTypes lists the supported Hugging Face model types, sorted.
func ModelTypes() []string {
	names := make([]string, 0, len(modelTypes))
	for n := range modelTypes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// FamilyOf returns the family of a Hugging Face model_type, or an error
// wrapping ErrConfig that names the supported types.
func FamilyOf(modelType string) (string, error) {
	f, ok := modelTypes[modelType]
	if !ok {
		return "", fmt.Errorf("%w: unsupported model_type %q (supported: %s)", ErrConfig, modelType, strings.Join(ModelTypes(), ", "))
	}
	return f, nil
}

// RopeScaling is Hugging Face's rope_scaling: "linear" divides positions by
// Factor; "llama3" rescales the low frequencies by Factor and smooths
// between LowFreqFactor and HighFreqFactor wavelengths of
// OriginalMaxPositions.
type RopeScaling struct {
	Type                 string  `json:"rope_type"`                                  // "linear" or "llama3"
	Factor               float64 `json:"factor"`                                     // > 0 (linear: ≥ 1 in practice)
	LowFreqFactor        float64 `json:"low_freq_factor,omitempty"`                  // llama3 only
	HighFreqFactor       float64 `json:"high_freq_factor,omitempty"`                 // llama3 only, > LowFreqFactor
	OriginalMaxPositions int     `json:"original_max_position_embeddings,omitempty"` // llama3 only
}

// validate checks the scaling's fields for its type.
func (s *RopeScaling) validate() error {
	if s == nil {
		return nil
	}
	if !(s.Factor > 0) || math.IsInf(s.Factor, 0) {
		return fmt.Errorf("rope_scaling factor must be positive and finite, got %v", s.Factor)
	}
	switch s.Type {
	case "linear":
	case "llama3":
		if !(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor) || math.IsInf(s.HighFreqFactor, 0) {
			return fmt.Errorf("rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor, got %v and %v", s.LowFreqFactor, s.HighFreqFactor)
		}
		if s.OriginalMaxPositions <= 0 {
			return fmt.Errorf("rope_scaling llama3 needs original_max_position_embeddings > 0, got %d", s.OriginalMaxPositions)
		}
	default:
		return fmt.Errorf("rope_scaling type %q is not supported (supported: linear, llama3)", s.Type)
	}
	return nil
}

// ropeFreqs returns the rotary inverse frequencies of c's heads (Llama
// family), computed by nn.RopeFreqs as transformers computes them.
func (c Config) ropeFreqs() ([]float32, error) {
	var s *nn.RopeScaling
	if r := c.RopeScaling; r != nil {
		s = &nn.RopeScaling{Type: r.Type, Factor: r.Factor, LowFreqFactor: r.LowFreqFactor, HighFreqFactor: r.HighFreqFactor,
			OriginalMaxPositions: r.OriginalMaxPositions}
	}
	f, err := nn.RopeFreqs(c.HeadDim(), c.RopeTheta, s)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	return f, nil
}

// FamilyName returns the effective family: Family, or FamilyGPT2 when empty.
func (c Config) FamilyName() string {
	if c.Family == "" {
		return FamilyGPT2
	}
	return c.Family
}

// HFModelType returns the Hugging Face model_type: ModelType, or the
// family's name when empty.
func (c Config) HFModelType() string {
	if c.ModelType == "" {
		return c.FamilyName()
	}
	return c.ModelType
}

// HeadDim is the width of one attention head: HeadDimension, or
// DModel/Heads when it is 0.
func (c Config) HeadDim() int {
	if c.HeadDimension > 0 {
		return c.HeadDimension
	}
	if c.Heads <= 0 {
		return 0
	}
	return c.DModel / c.Heads
}

// MLPWidth is the width of the MLP's hidden layer: Intermediate, or
// MLPRatio·DModel when it is 0.
func (c Config) MLPWidth() int {
	if c.Intermediate > 0 {
		return c.Intermediate
	}
	return c.MLPRatio * c.DModel
}

// QKVWidth is the output width of the fused query/key/value projection
// (GPT-2's c_attn), and the summed widths of Llama's q, k and v projections.
func (c Config) QKVWidth() int { return (c.Heads + 2*c.KVHeads) * c.HeadDim() }

// Validate reports the first problem with c, wrapping ErrConfig. Besides
// the consistency of the fields it enforces the size limits (MaxVocab…
// MaxParams), so that a valid config can be allocated without overflow.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	mlpRatioMin := 1
	if c.Intermediate != 0 {
		mlpRatioMin = 0 // intermediate_size takes precedence
	}
	for _, f := range []struct {
		name        string
		v, min, max int
	}{{"vocab_size", c.Vocab, 1, MaxVocab}, {"n_embd", c.DModel, 1, MaxDModel}, {"n_layer", c.Layers, 1, MaxLayers},
		{"n_head", c.Heads, 1, MaxHeads}, {"n_kv_head", c.KVHeads, 1, MaxHeads}, {"n_positions", c.SeqLen, 1, MaxSeqLen},
		{"mlp_ratio", c.MLPRatio, mlpRatioMin, MaxMLPRatio}, {"intermediate_size", c.Intermediate, 0, MaxMLPRatio * MaxDModel},
		{"head_dim", c.HeadDimension, 0, MaxDModel}, {"sliding_window", c.SlidingWindow, 0, MaxSeqLen}} {
		if f.v < f.min {
			if f.min == 1 {
				return bad("%s must be positive, got %d", f.name, f.v)
			}
			return bad("%s must be at least %d, got %d", f.name, f.min, f.v)
		}
		if f.v > f.max {
			return bad("%s is %d, more than the limit %d", f.name, f.v, f.max)
		}
	}
	if c.HeadDimension == 0 && c.DModel%c.Heads != 0 {
		return bad("%d heads do not divide d_model %d", c.Heads, c.DModel)
	}
	if c.Heads%c.KVHeads != 0 {
		return bad("%d key/value heads do not divide %d heads", c.KVHeads, c.Heads)
	}
	family := c.FamilyName()
	if family != FamilyGPT2 && family != FamilyLlama {
		return bad("family %q is not %q or %q", c.Family, FamilyGPT2, FamilyLlama)
	}
	if c.ModelType != "" {
		f, err := FamilyOf(c.ModelType)
		if err != nil {
			return err
		}
		if f != family {
			return bad("model_type %q belongs to family %q, not %q", c.ModelType, f, family)
		}
	}
	switch family {
	case FamilyGPT2:
		if c.Heads*c.HeadDim() != c.DModel {
			return bad("gpt2: head_dim %d × %d heads must equal n_embd %d", c.HeadDim(), c.Heads, c.DModel)
		}
		if c.RopeTheta != 0 || c.RopeScaling != nil || c.SlidingWindow != 0 {
			return bad("gpt2 has learned positions and full attention: rope_theta, rope_scaling and sliding_window must be unset")
		}
	case FamilyLlama:
		if c.HeadDim()%2 != 0 {
			return bad("rotary positions need an even head_dim, got %d", c.HeadDim())
		}
		if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
			return bad("rope_theta must be positive and finite, got %v", c.RopeTheta)
		}
		if err := c.RopeScaling.validate(); err != nil {
			return bad("%w", err)
		}
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
// allocating per layer. It returns an error wrapping ErrConfig when a size
// is not positive, a tensor exceeds MaxTensorElems, or the total exceeds
// MaxParams or what an int holds on this platform.
func (c Config) ParamCount() (int64, error) {
	bad := func(format string, args ...any) (int64, error) {
		return 0, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if c.Vocab <= 0 || c.DModel <= 0 || c.SeqLen <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 ||
		c.MLPWidth() <= 0 || c.HeadDim() <= 0 || c.MLPRatio < 0 || c.Intermediate < 0 {
		return bad("sizes %+v", c)
	}
	var total int64
	err := c.eachParamShape(func(name string, block bool, dims []int64) error {
		n := int64(1)
		var err error
		for _, d := range dims {
			if n, err = mulChecked(n, d); err != nil {
				return err
			}
		}
		if n > MaxTensorElems {
			return fmt.Errorf("%s has %d elements, more than %d", name, n, MaxTensorElems)
		}
		if block {
			if n, err = mulChecked(n, int64(c.Layers)); err != nil {
				return err
			}
		}
		total, err = addChecked(total, n)
		return err
	})
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

// presets are the standard sizes (TestPresetsMatchDesign pins them);
// benchmarks and the PyTorch comparisons use them exactly.
var presets = map[string]Preset{
	"tiny":   {Name: "tiny", Config: gpt(128, 2, 4, 64), Batch: 8},
	"small":  {Name: "small", Config: gpt(256, 4, 8, 256), Batch: 8},
	"medium": {Name: "medium", Config: gpt(512, 8, 8, 256), Batch: 4},
}

// GPT2_124M returns GPT-2 124M's architecture (Hugging Face's gpt2: vocab
// 50,257, 768 wide, 12 layers of 12 heads, 1,024 positions, tied head).
func GPT2_124M() Config {
	return Config{Family: FamilyGPT2, ModelType: "gpt2", Vocab: 50257, DModel: 768, Layers: 12, Heads: 12, KVHeads: 12,
		SeqLen: 1024, MLPRatio: 4, TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: AttentionFlash}
}

// SmolLM2_135M returns SmolLM2-135M's architecture (a llama: vocab 49,152,
// 576 wide, 30 layers, 9 query and 3 key/value heads, MLP 1,536, tied head,
// rope_theta 100,000, 8,192 positions).
func SmolLM2_135M() Config {
	return Config{Family: FamilyLlama, ModelType: "llama", Vocab: 49152, DModel: 576, Layers: 30, Heads: 9, KVHeads: 3,
		SeqLen: 8192, Intermediate: 1536, TiedEmbeddings: true, LayerNormEps: 1e-5, RopeTheta: 100000, Attention: AttentionFlash}
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
	widest := max(int64(c.Vocab), int64(c.MLPWidth()), int64(c.QKVWidth()), int64(c.DModel))
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
