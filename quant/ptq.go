package quant

import (
	"fmt"
	"slices"

	"github.com/galleon-ml/galleon/model"
)

// Config says how Quantize turns a float32 model into an int8 one.
type Config struct {
	// Act is the activation mode of the int8 linears: ActFloat (weights
	// only, "W8"), ActDynamic (per token, "W8A8") or ActStatic (per tensor,
	// scales from ActScales).
	Act ActMode `json:"act"`
	// Threshold enables LLM.int8() outlier decomposition (DefaultThreshold
	// is the usual value); 0 disables it.
	Threshold float32 `json:"threshold"`
	// ActScales holds the static input scale of each layer (ActStatic), as
	// returned by Calibrate.
	ActScales map[string]float32 `json:"act_scales,omitempty"`
	// Layers lists the linear layers to quantize; empty means all of them
	// (the untied output head "lm_head" included, when the model has one).
	Layers []string `json:"layers,omitempty"`
	// Embeddings also quantizes the token and position embeddings per row
	// (per token / position). They stay float32 tables in memory holding
	// the dequantized values, and int8 in checkpoints. With tied embeddings
	// the output head is the token embedding: it then computes logits in
	// float32 on the dequantized int8 table, i.e. its weights are int8
	// (per vocabulary row) but its product is not an int8 GEMM.
	Embeddings bool `json:"embeddings"`
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

// embeddingNames are the parameters Config.Embeddings quantizes.
var embeddingNames = []string{model.NameWTE + ".weight", model.NameWPE + ".weight"}

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
		names = m.LinearNames()
	}
	nm, err := model.New(m.Config, 0)
	if err != nil {
		return nil, fmt.Errorf("quant: Quantize: %w", err)
	}
	for _, np := range nm.Weights.Params {
		p := m.Weights.Get(np.Name)
		if p == nil || len(p.Data) != len(np.Data) {
			return nil, fmt.Errorf("quant: Quantize: the model has no float32 parameter %q (released by ReleaseReplaced?): quantize the float model: %w", np.Name, ErrInput)
		}
		copy(np.Data, p.Data)
	}
	q := &Model{Model: nm, Config: cfg, Linears: map[string]*Linear{}, Embeddings: map[string]*Rows{}}
	q.Config.Layers = slices.Clone(names)
	for _, name := range names {
		src, err := m.Linear(name)
		if err != nil {
			return nil, fmt.Errorf("quant: Quantize: %w", err)
		}
		opts := LinearOptions{Act: cfg.Act, Threshold: cfg.Threshold}
		if cfg.Act == ActStatic {
			s, ok := cfg.ActScales[name]
			_, qat := src.(*QATLinear)
			if !ok && !qat {
				return nil, fmt.Errorf("quant: Quantize: no static activation scale for %q: %w", name, ErrInput)
			}
			opts.ActScale = s // 0 for a QAT layer: its own scale
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
	}
	if cfg.Embeddings {
		for _, name := range embeddingNames {
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
	return q, nil
}
