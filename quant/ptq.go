package quant

import (
	"fmt"
	"maps"
	"slices"

	"github.com/galleon-ml/galleon/model"
)

// Config says how Quantize turns a float32 model into an int8 one. Start
// from DefaultConfig: its zero value differs from it in the outlier
// threshold (0, decomposition off) and in the activation mode (ActFloat).
type Config struct {
	// Act is the activation mode of the int8 linears: ActFloat (weights
	// only, "W8"), ActDynamic (per token, "W8A8") or ActStatic (per tensor,
	// scales from ActScales).
	Act ActMode `json:"act"`
	// Threshold is LLM.int8()'s outlier threshold: input columns holding
	// any |x| ≥ Threshold are multiplied in float32. DefaultConfig sets
	// DefaultThreshold (6.0); 0 disables the decomposition.
	Threshold float32 `json:"threshold"`
	// ActScales holds the static input scale of each layer (ActStatic), as
	// returned by Calibrate.
	ActScales map[string]float32 `json:"act_scales,omitempty"`
	// Layers lists the linear layers to quantize; empty means all of them
	// except the output head, which Head decides. Naming the untied head
	// "lm_head" here is the same as setting Head.
	Layers []string `json:"layers,omitempty"`
	// Embeddings also quantizes the token and position embeddings per row
	// (per token / position). They stay float32 tables in memory holding
	// the dequantized values, and int8 in checkpoints.
	Embeddings bool `json:"embeddings"`
	// Head runs the output head (the logits) on the int8 GEMM as well,
	// with the activation mode and threshold above. Off by default: the
	// head then computes logits in float32 (on the dequantized int8 token
	// embedding when it is tied and Embeddings is set). The head's weight
	// is quantized per vocabulary row, so a head tied to the token
	// embedding uses exactly the embedding's per-row int8 table: with
	// Embeddings both share one int8 copy (checkpoints store it once), and
	// without it the table is quantized again when loading. A tied head is
	// run as a separate layer "lm_head" over that table: in memory the
	// quantized model's Config is untied and Linears holds "lm_head", while
	// its checkpoint keeps the tied configuration. With ActStatic the head
	// uses ActScales["lm_head"] if present (Calibrate measures an untied
	// head only) and per-token scales otherwise. An untied head "lm_head"
	// is an ordinary linear layer, quantized when Head is set or Layers
	// names it.
	Head bool `json:"int8_head,omitempty"`
}

// DefaultConfig returns the recommended configuration: per-token dynamic
// activations (W8A8) with LLM.int8() outlier decomposition at
// DefaultThreshold, float32 embeddings and a float32 output head. Set
// Threshold to 0 to disable the decomposition.
func DefaultConfig() Config {
	return Config{Act: ActDynamic, Threshold: DefaultThreshold}
}

// headOptions returns the options of the int8 output head under cfg.
func headOptions(cfg Config) LinearOptions {
	opts := LinearOptions{Act: cfg.Act, Threshold: cfg.Threshold}
	if cfg.Act == ActStatic {
		opts.ActScale = cfg.ActScales[model.NameHead]
		if opts.ActScale == 0 {
			opts.Act = ActDynamic
		}
	}
	return opts
}

// tiedHead reports whether the configuration runs a tied output head on the
// int8 GEMM (as the separate layer "lm_head" over the token embedding).
func (c *Config) tiedHead() bool {
	return c.Head && !slices.Contains(c.Layers, model.NameHead)
}

// Model is an int8 inference model: a model.Model whose linear layers are
// *Linear. Its inference methods (Evaluate, Logits, Loss, Generate,
// NewInference) run the int8 GEMMs.
type Model struct {
	*model.Model
	Config Config // how the model was quantized
	// Linears maps each quantized layer's name to its int8 layer.
	Linears map[string]*Linear
	// Embeddings maps each quantized embedding parameter (with Config.Embeddings)
	// to its per-row int8 table.
	Embeddings map[string]*Rows
}

// Quantize returns an int8 copy of m; m itself is not modified. Each selected
// linear layer must be a *model.DenseLinear (the trained float32 layer) or a
// *QATLinear (a fake-quant layer from InsertFakeQuant, whose learned weight
// and activation scales are then used).
func Quantize(m *model.Model, cfg Config) (*Model, error) {
	if m == nil {
		return nil, fmt.Errorf("quant: Quantize: nil model: %w", ErrInput)
	}
	names := cfg.Layers
	if len(names) == 0 {
		for _, name := range m.LinearNames() {
			if name != model.NameHead {
				names = append(names, name)
			}
		}
	}
	arch := m.Config
	tiedHead := false
	if arch.TiedEmbeddings {
		tiedHead = cfg.Head
		arch.TiedEmbeddings = !tiedHead // the int8 head is a layer of its own
	} else {
		if cfg.Head && !slices.Contains(names, model.NameHead) {
			names = append(slices.Clone(names), model.NameHead)
		}
		cfg.Head = slices.Contains(names, model.NameHead)
	}
	nm, err := model.New(arch, 0)
	if err != nil {
		return nil, fmt.Errorf("quant: Quantize: %w", err)
	}
	for _, np := range nm.Weights.Params {
		if tiedHead && np.Name == model.NameHead+".weight" {
			continue // set from the token embedding below
		}
		p := m.Weights.Get(np.Name)
		if p == nil || len(p.Data) != len(np.Data) {
			return nil, fmt.Errorf("quant: Quantize: the model has no float32 parameter %q (released by ReleaseReplaced?): quantize the float model: %w", np.Name, ErrInput)
		}
		copy(np.Data, p.Data)
	}
	q := &Model{Model: nm, Config: cfg, Linears: map[string]*Linear{}, Embeddings: map[string]*Rows{}}
	q.Config.Layers = slices.Clone(names)
	q.Config.ActScales = maps.Clone(cfg.ActScales) // not the caller's map
	for _, name := range names {
		src, err := m.Linear(name)
		if err != nil {
			return nil, fmt.Errorf("quant: Quantize: %w", err)
		}
		opts := LinearOptions{Act: cfg.Act, Threshold: cfg.Threshold}
		if cfg.Act == ActStatic {
			s, ok := cfg.ActScales[name]
			_, qat := src.(*QATLinear)
			switch {
			case !ok && !qat && name == model.NameHead:
				opts = headOptions(cfg) // per-token, as a tied head
			case !ok && !qat:
				return nil, fmt.Errorf("quant: Quantize: no static activation scale for %q: %w", name, ErrInput)
			default:
				opts.ActScale = s // 0 for a QAT layer: its own scale
			}
		}
		var l *Linear
		switch s := src.(type) {
		case *model.DenseLinear:
			in, out := s.Dims()
			var b []float32
			if s.Bias != nil {
				b = s.Bias.Data
			}
			l, err = NewLinear(s.Weight.Data, b, in, out, opts)
		case *QATLinear:
			l, err = s.convert(opts)
		default:
			err = fmt.Errorf("quant: Quantize: layer %q is a %T, not a dense or fake-quant layer: %w", name, src, ErrInput)
		}
		if err != nil {
			return nil, fmt.Errorf("quant: layer %q: %w", name, err)
		}
		if err := nm.SetLinear(name, l); err != nil {
			return nil, fmt.Errorf("quant: Quantize: %w", err)
		}
		// Keep the parameter tables consistent with the int8 layer (as
		// Load does): dequantized weight, and the bias it uses.
		if p := nm.Weights.Get(name + ".weight"); p != nil && len(p.Data) == l.In*l.Out {
			_ = l.Weight.DequantizeTransposed(p.Data)
		}
		if p := nm.Weights.Get(name + ".bias"); p != nil && len(p.Data) == len(l.Bias) {
			copy(p.Data, l.Bias)
		}
		q.Linears[name] = l
		if l.Act == ActStatic && q.Config.ActScales[name] != l.ActScale {
			// A QAT layer's own scale: recorded so that checkpoints
			// carry it.
			if q.Config.ActScales == nil {
				q.Config.ActScales = map[string]float32{}
			}
			q.Config.ActScales[name] = l.ActScale
		}
	}
	if cfg.Embeddings {
		for _, name := range arch.EmbeddingNames() { // the embedding tables, which Config.Embeddings quantizes
			p := nm.Weights.Get(name)
			if p == nil || len(p.Shape) != 2 {
				return nil, fmt.Errorf("quant: Quantize: no embedding %q: %w", name, ErrInput)
			}
			r, err := QuantizeRows(p.Data, p.Shape[0], p.Shape[1])
			if err != nil {
				return nil, fmt.Errorf("quant: embedding %q: %w", name, err)
			}
			if err := r.Dequantize(p.Data); err != nil {
				return nil, err
			}
			q.Embeddings[name] = r
		}
	}
	if tiedHead {
		if err := q.setTiedHead(); err != nil {
			return nil, fmt.Errorf("quant: Quantize: %w", err)
		}
	}
	return q, nil
}

// setTiedHead installs the int8 output head "lm_head" over the token
// embedding's per-row int8 table (Embeddings's, or the float table
// quantized per row) in q, whose model is untied for it, and keeps the
// float32 parameter lm_head.weight consistent with it.
func (q *Model) setTiedHead() error {
	wte := q.Model.Config.TokenEmbeddingName()
	r := q.Embeddings[wte]
	if r == nil {
		p := q.Model.Weights.Get(wte)
		if p == nil || len(p.Shape) != 2 {
			return fmt.Errorf("no token embedding %q: %w", wte, ErrInput)
		}
		var err error
		if r, err = QuantizeRows(p.Data, p.Shape[0], p.Shape[1]); err != nil {
			return fmt.Errorf("output head: %w", err)
		}
	}
	l, err := NewLinearFromRows(r, nil, headOptions(q.Config))
	if err != nil {
		return fmt.Errorf("output head: %w", err)
	}
	if err := q.Model.SetLinear(model.NameHead, l); err != nil {
		return err
	}
	if p := q.Model.Weights.Get(model.NameHead + ".weight"); p != nil && len(p.Data) == l.In*l.Out {
		if err := l.Weight.DequantizeTransposed(p.Data); err != nil {
			return err
		}
	}
	q.Linears[model.NameHead] = l
	return nil
}
