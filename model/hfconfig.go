package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// hfInfo is what a model loaded from a Hugging Face directory remembers
// for SavePretrained: the dtype of its weights and the config.json keys
// galleon does not interpret (token ids, tokenizer hints, …), written back
// unchanged.
type hfInfo struct {
	dtype string                     // torch_dtype: float32, float16 or bfloat16
	extra map[string]json.RawMessage // uninterpreted config.json keys
}

// hfKnownKeys are the config.json keys parseHFConfig interprets or
// recomputes on save, per family.
var hfKnownKeys = map[string][]string{
	FamilyGPT2: {"n_embd", "n_layer", "n_head", "n_positions", "n_ctx", "vocab_size", "layer_norm_epsilon",
		"activation_function", "n_inner", "tie_word_embeddings", "resid_pdrop", "embd_pdrop", "attn_pdrop",
		"scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"},
	FamilyLlama: {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
		"head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "attention_bias", "mlp_bias",
		"tie_word_embeddings", "vocab_size", "hidden_act", "sliding_window", "use_sliding_window", "max_window_layers",
		"attention_dropout", "pretraining_tp"},
}

// hfCommonKeys are recomputed on save for every family.
var hfCommonKeys = []string{"architectures", "model_type", "torch_dtype", "dtype"}

// hfArchitectures is the transformers class that loads each model_type.
var hfArchitectures = map[string]string{"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}

// parseHFConfig reads a Hugging Face config.json into a Config. Keys the
// model's semantics depend on are checked (activation, attention variants,
// rope_scaling type); a value galleon cannot reproduce is an error naming it.
func parseHFConfig(data []byte) (Config, *hfInfo, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, nil, fmt.Errorf("%w: config.json: %v", ErrConfig, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: config.json: "+format, append([]any{ErrConfig}, args...)...)
	}
	var mt string
	if err := hfGet(raw, "model_type", &mt); err != nil {
		return Config{}, nil, err
	}
	if mt == "" {
		return Config{}, nil, bad("no model_type (supported: %s)", strings.Join(ModelTypes(), ", "))
	}
	family, err := FamilyOf(mt)
	if err != nil {
		return Config{}, nil, err
	}
	info := &hfInfo{dtype: "float32", extra: map[string]json.RawMessage{}}
	known := map[string]bool{}
	for _, k := range append(hfKnownKeys[family], hfCommonKeys...) {
		known[k] = true
	}
	for k, v := range raw {
		if !known[k] {
			info.extra[k] = v
		}
	}
	var dt string
	for _, k := range []string{"torch_dtype", "dtype"} {
		if err := hfGet(raw, k, &dt); err != nil {
			return Config{}, nil, err
		}
		if dt != "" {
			break
		}
	}
	switch dt {
	case "", "float32":
	case "float16", "bfloat16":
		info.dtype = dt
	default:
		return Config{}, nil, bad("torch_dtype %q is not float32, float16 or bfloat16", dt)
	}
	c := Config{Family: family, ModelType: mt, Attention: AttentionFlash}
	// get reads the keys in order into the fields; each must be present
	// unless a default is given.
	type field struct {
		key string
		dst any
	}
	get := func(fs ...field) error {
		for _, f := range fs {
			if err := hfGet(raw, f.key, f.dst); err != nil {
				return err
			}
		}
		return nil
	}
	need := func(keys ...string) error {
		for _, k := range keys {
			if v, ok := raw[k]; !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				return bad("%s config has no %q", mt, k)
			}
		}
		return nil
	}
	switch family {
	case FamilyGPT2:
		var nInner *int
		var eps *float64
		var act = "gelu_new"
		var resid *float64
		tied := true
		var scaleInv, reorder, cross bool
		scale := true
		if err := get(field{"n_embd", &c.DModel}, field{"n_layer", &c.Layers}, field{"n_head", &c.Heads},
			field{"n_positions", &c.SeqLen}, field{"vocab_size", &c.Vocab}, field{"layer_norm_epsilon", &eps},
			field{"activation_function", &act}, field{"n_inner", &nInner}, field{"tie_word_embeddings", &tied},
			field{"resid_pdrop", &resid}, field{"scale_attn_weights", &scale},
			field{"scale_attn_by_inverse_layer_idx", &scaleInv}, field{"reorder_and_upcast_attn", &reorder},
			field{"add_cross_attention", &cross}); err != nil {
			return Config{}, nil, err
		}
		if c.SeqLen == 0 { // older configs name it n_ctx
			if err := hfGet(raw, "n_ctx", &c.SeqLen); err != nil {
				return Config{}, nil, err
			}
		}
		if err := need("n_embd", "n_layer", "n_head", "vocab_size"); err != nil {
			return Config{}, nil, err
		}
		switch act {
		case "gelu_new", "gelu_pytorch_tanh", "gelu_fast":
		default:
			return Config{}, nil, bad("gpt2 activation_function %q: galleon's GELU is the tanh form (gelu_new)", act)
		}
		if !scale || scaleInv || cross {
			return Config{}, nil, bad("gpt2 with scale_attn_weights false, scale_attn_by_inverse_layer_idx or cross-attention is not supported")
		}
		c.KVHeads, c.MLPRatio, c.TiedEmbeddings = c.Heads, 4, tied
		c.LayerNormEps = 1e-5
		if eps != nil {
			c.LayerNormEps = float32(*eps)
		}
		if nInner != nil && *nInner != 4*c.DModel {
			c.Intermediate = *nInner
		}
		if resid != nil {
			c.Dropout = float32(*resid)
		}
	case FamilyLlama:
		var kv, headDim, window *int
		eps, theta := 1e-6, 10000.0
		act := "silu"
		tied := false
		var attnBias, mlpBias, useWindow bool
		var maxWindowLayers *int
		var scaling map[string]any
		if err := get(field{"hidden_size", &c.DModel}, field{"intermediate_size", &c.Intermediate},
			field{"num_hidden_layers", &c.Layers}, field{"num_attention_heads", &c.Heads},
			field{"num_key_value_heads", &kv}, field{"head_dim", &headDim}, field{"max_position_embeddings", &c.SeqLen},
			field{"rms_norm_eps", &eps}, field{"rope_theta", &theta}, field{"rope_scaling", &scaling},
			field{"attention_bias", &attnBias}, field{"mlp_bias", &mlpBias}, field{"tie_word_embeddings", &tied},
			field{"vocab_size", &c.Vocab}, field{"hidden_act", &act}, field{"sliding_window", &window},
			field{"use_sliding_window", &useWindow}, field{"max_window_layers", &maxWindowLayers}); err != nil {
			return Config{}, nil, err
		}
		if err := need("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings"); err != nil {
			return Config{}, nil, err
		}
		if act != "silu" {
			return Config{}, nil, bad("%s hidden_act %q: the MLP is SwiGLU (silu)", mt, act)
		}
		c.KVHeads = c.Heads
		if kv != nil {
			c.KVHeads = *kv
		}
		if headDim != nil {
			c.HeadDimension = *headDim
			if c.Heads > 0 && *headDim*c.Heads == c.DModel {
				c.HeadDimension = 0 // the default: keep configs canonical
			}
		}
		c.LayerNormEps, c.RopeTheta, c.TiedEmbeddings = float32(eps), theta, tied
		rs, err := parseRopeScaling(scaling)
		if err != nil {
			return Config{}, nil, bad("%v", err)
		}
		c.RopeScaling = rs
		switch mt {
		case "llama":
			c.AttnBias, c.AttnOutBias, c.MLPBias = attnBias, attnBias, mlpBias
		case "mistral":
			// MistralConfig's default window is 4096; null disables it.
			if _, ok := raw["sliding_window"]; !ok {
				c.SlidingWindow = 4096
			} else if window != nil {
				c.SlidingWindow = *window
			}
		case "qwen2":
			c.AttnBias = true
			if useWindow && window != nil {
				mwl := 28 // Qwen2Config's default
				if maxWindowLayers != nil {
					mwl = *maxWindowLayers
				}
				switch {
				case mwl == 0:
					c.SlidingWindow = *window
				case mwl < c.Layers:
					return Config{}, nil, bad("qwen2 with sliding windows on layers %d… only (max_window_layers) is not supported", mwl)
				}
			}
		}
		if c.SlidingWindow >= c.SeqLen {
			c.SlidingWindow = 0 // a window as long as the context changes nothing
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, nil, err
	}
	return c, info, nil
}

// hfGet decodes raw[key] into dst when present and not null.
func hfGet(raw map[string]json.RawMessage, key string, dst any) error {
	v, ok := raw[key]
	if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("%w: config.json: %s: %v", ErrConfig, key, err)
	}
	return nil
}

// parseRopeScaling maps Hugging Face's rope_scaling (the type under
// "rope_type" or the older "type"); "default" and null mean none.
func parseRopeScaling(m map[string]any) (*RopeScaling, error) {
	if m == nil {
		return nil, nil
	}
	typ, _ := m["rope_type"].(string)
	if typ == "" {
		typ, _ = m["type"].(string)
	}
	num := func(k string) float64 {
		f, _ := m[k].(float64)
		return f
	}
	switch typ {
	case "default":
		return nil, nil
	case "linear":
		return &RopeScaling{Type: "linear", Factor: num("factor")}, nil
	case "llama3":
		omp := num("original_max_position_embeddings")
		if omp != math.Trunc(omp) || omp > MaxSeqLen {
			return nil, fmt.Errorf("rope_scaling original_max_position_embeddings %v", omp)
		}
		return &RopeScaling{Type: "llama3", Factor: num("factor"), LowFreqFactor: num("low_freq_factor"),
			HighFreqFactor: num("high_freq_factor"), OriginalMaxPositions: int(omp)}, nil
	}
	return nil, fmt.Errorf("rope_scaling type %q is not supported (supported: linear, llama3)", typ)
}

// hfConfigJSON writes c as a Hugging Face config.json for its model_type,
// with the given torch_dtype and the extra keys a loaded model carried.
func hfConfigJSON(c Config, dtype string, extra map[string]json.RawMessage) ([]byte, error) {
	mt := c.HFModelType()
	out := map[string]any{}
	for k, v := range extra {
		out[k] = v
	}
	out["architectures"] = []string{hfArchitectures[mt]}
	out["model_type"] = mt
	out["torch_dtype"] = dtype
	out["vocab_size"] = c.Vocab
	out["tie_word_embeddings"] = c.TiedEmbeddings
	switch c.FamilyName() {
	case FamilyGPT2:
		var nInner any
		if c.Intermediate != 0 && c.Intermediate != 4*c.DModel {
			nInner = c.Intermediate
		}
		if c.Intermediate == 0 && c.MLPRatio != 4 {
			nInner = c.MLPWidth()
		}
		for k, v := range map[string]any{"n_embd": c.DModel, "n_layer": c.Layers, "n_head": c.Heads, "n_positions": c.SeqLen,
			"n_inner": nInner, "activation_function": "gelu_new", "layer_norm_epsilon": c.LayerNormEps,
			"resid_pdrop": c.Dropout, "embd_pdrop": c.Dropout, "attn_pdrop": c.Dropout} {
			out[k] = v
		}
		if c.KVHeads != c.Heads {
			return nil, fmt.Errorf("%w: gpt2 has no grouped-query attention (n_kv_head %d ≠ n_head %d)", ErrConfig, c.KVHeads, c.Heads)
		}
	case FamilyLlama:
		for k, v := range map[string]any{"hidden_size": c.DModel, "intermediate_size": c.MLPWidth(), "num_hidden_layers": c.Layers,
			"num_attention_heads": c.Heads, "num_key_value_heads": c.KVHeads, "head_dim": c.HeadDim(),
			"max_position_embeddings": c.SeqLen, "rms_norm_eps": c.LayerNormEps, "rope_theta": c.RopeTheta,
			"hidden_act": "silu", "attention_dropout": 0.0} {
			out[k] = v
		}
		var rs any
		if s := c.RopeScaling; s != nil {
			m := map[string]any{"rope_type": s.Type, "factor": s.Factor}
			if s.Type == "llama3" {
				m["low_freq_factor"], m["high_freq_factor"], m["original_max_position_embeddings"] = s.LowFreqFactor, s.HighFreqFactor, s.OriginalMaxPositions
			}
			rs = m
		}
		out["rope_scaling"] = rs
		var window any
		if c.SlidingWindow > 0 {
			window = c.SlidingWindow
		}
		switch mt {
		case "llama":
			if c.AttnBias != c.AttnOutBias {
				return nil, fmt.Errorf("%w: llama's attention_bias covers q, k, v and o together (have %v and %v)", ErrConfig, c.AttnBias, c.AttnOutBias)
			}
			if c.SlidingWindow > 0 {
				return nil, fmt.Errorf("%w: llama has no sliding_window; use model_type mistral", ErrConfig)
			}
			out["attention_bias"], out["mlp_bias"] = c.AttnBias, c.MLPBias
		case "mistral":
			if c.AttnBias || c.AttnOutBias || c.MLPBias {
				return nil, fmt.Errorf("%w: mistral has no biases", ErrConfig)
			}
			out["sliding_window"] = window
		case "qwen2":
			if !c.AttnBias || c.AttnOutBias || c.MLPBias {
				return nil, fmt.Errorf("%w: qwen2 has biases on q, k and v only", ErrConfig)
			}
			out["use_sliding_window"] = c.SlidingWindow > 0
			out["sliding_window"] = window
			out["max_window_layers"] = 0
		}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("model: config.json: %w", err)
	}
	return append(b, '\n'), nil
}
