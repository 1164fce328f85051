package model

import (
	"github.com/galleon-ml/galleon/internal/nn"
	"github.com/galleon-ml/galleon/internal/safetensors"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// KeepBF16 makes LoadPretrained keep linear weights stored as BF16 in
// bfloat16, as frozen BF16Linear layers, instead of widening them to
// float32: half the memory of those weights, for inference, generation and
// adapters over a frozen base. A token embedding stored as BF16 stays
// bfloat16 too, frozen, in families without learned positions (the Llama
// family; GPT-2's embeddings stay float32): its rows are widened as they
// are gathered, and as a tied output head its products run on
// kernels.GemmBF16 like the layers' (nn.LinearCrossEntropyBF16 in
// training). The float32 copies are never allocated: the model's Weights
// lack those tensors (and the layers' biases), as after
// Model.ReleaseReplaced, so it cannot be trained in full or saved with
// Model.Save; SavePretrained writes the bf16 weights back untouched. Other
// tensors (norms, weights stored as F32 or F16) load as float32 as usual.
// It cannot be combined with WithLinearLoader.
func KeepBF16() LoadOption {
	return func(o *loadOptions) error { o.keepBF16 = true; return nil }
}

// loadBF16Linear is KeepBF16's layer loader: the weight's bits as stored.
func loadBF16Linear(w *HFLinear) (Linear, error) {
	weights := make([]uint16, w.In*w.Out)
	if err := w.st.readBF16(w.w, weights, w.buf); err != nil {
		return nil, err
	}
	return NewBF16Linear(weights, w.In, w.Out, !w.inOut, w.Bias)
}

// bf16Tensors returns, by parameter name, the tensors that BF16Linear
// layers (possibly under adapters) hold instead of the float32 Weights: the
// weight in bfloat16 and the bias in float32.
func (m *Model) bf16Tensors() map[string]stOut {
	out := map[string]stOut{}
	for _, name := range m.LinearNames() {
		l := m.linears[name]
		for range 16 {
			b, ok := l.(interface{ Base() Linear })
			if !ok {
				break
			}
			l = b.Base()
		}
		bl, ok := l.(*BF16Linear)
		if !ok {
			continue
		}
		if m.Weights.Get(name+".weight") == nil {
			out[name+".weight"] = stOut{name: name + ".weight", bf16: bl.Weight}
		}
		if bl.Bias != nil && m.Weights.Get(name+".bias") == nil {
			out[name+".bias"] = stOut{name: name + ".bias", src: bl.Bias}
		}
	}
	if m.tokensBF16 != nil {
		name := m.Config.TokenEmbeddingName()
		out[name] = stOut{name: name, bf16: m.tokensBF16}
	}
	return out
}

// BF16Params returns the number of weights the model holds in bfloat16
// (KeepBF16) rather than in Weights: the weights of its BF16Linear layers,
// also under adapters, and a token embedding kept in bfloat16.
func (m *Model) BF16Params() int {
	n := 0
	for _, t := range m.bf16Tensors() {
		n += len(t.bf16)
	}
	return n
}

// tokensBF16OK reports whether the family can hold its token embedding in
// bfloat16: one without learned positions, whose embedding op is the
// token gather alone.
func (c Config) tokensBF16OK() bool { return c.arch().positions == "" }

// keepsTokensBF16 reports whether KeepBF16 keeps the token embedding of
// the files' tensors where in bfloat16: the family allows it and the file
// stores it as BF16.
func (c Config) keepsTokensBF16(where map[string]*stEntry) bool {
	e := where[c.TokenEmbeddingName()]
	return c.tokensBF16OK() && e != nil && e.dtype == safetensors.BF16
}

// tokenLeaf is the embedding output of a training graph whose token
// embedding is held in bfloat16: a leaf node bound to out, which the
// replica fills with the inputs' rows, widened, before every run. The
// table is frozen, so no op of the graph needs to read it, and the
// backward pass stops at the leaf.
type tokenLeaf struct {
	table []uint16
	C     int
	out   []float32
}

// tokenLeaf adds the leaf of the graph's rows over table.
func (gc *GraphContext) tokenLeaf(table []uint16, C int) *G.Node {
	l := &tokenLeaf{table: table, C: C, out: make([]float32, gc.rows*C)}
	gc.tokens = l
	v := tensor.New(tensor.WithShape(gc.rows, C), tensor.WithBacking(l.out))
	return G.NodeFromAny(gc.g, v, G.WithName("bf16 token embedding"))
}

// fill gathers the rows of ids.
func (l *tokenLeaf) fill(ids []int32) error {
	return nn.TokenEmbeddingForwardBF16(l.out, l.table, ids, l.C)
}
