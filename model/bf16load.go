package model

// KeepBF16 makes LoadPretrained keep linear weights stored as BF16 in
// bfloat16, as frozen BF16Linear layers, instead of widening them to
// float32: half the memory of those weights, for inference, generation and
// adapters over a frozen base. The float32 copies are never allocated: the
// model's Weights lack those tensors (and the layers' biases), as after
// Model.ReleaseReplaced, so it cannot be trained in full or saved with
// Model.Save; SavePretrained writes the bf16 weights back untouched. Other
// tensors (embeddings, norms, weights stored as F32 or F16) load as
// float32 as usual. It cannot be combined with WithLinearLoader.
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
	return out
}

// BF16Params returns the number of weights the model holds in bfloat16
// (KeepBF16) rather than in Weights: the weights of its BF16Linear layers,
// also under adapters.
func (m *Model) BF16Params() int {
	n := 0
	for _, t := range m.bf16Tensors() {
		n += len(t.bf16)
	}
	return n
}
