package model

import "github.com/galleon-ml/galleon/internal/safetensors"

// LoadOption changes how LoadPretrained loads a model.
type LoadOption func(*loadOptions)

type loadOptions struct {
	keepBF16 bool
}

// KeepBF16 makes LoadPretrained keep linear weights stored as BF16 in
// bfloat16, as frozen BF16Linear layers, instead of widening them to
// float32: half the memory of those weights, for inference, generation and
// adapters over a frozen base. The model's float32 Weights then lack those
// tensors (and the layers' biases), as after Model.ReleaseReplaced, so it
// cannot be trained in full or saved with Model.Save; SavePretrained
// writes the bf16 weights back untouched. Other tensors (embeddings, norms,
// weights stored as F32 or F16) load as float32 as usual.
func KeepBF16() LoadOption { return func(o *loadOptions) { o.keepBF16 = true } }

// newKeepingBF16 returns the model LoadPretrained fills under KeepBF16:
// every linear module whose weight is stored as BF16 is a BF16Linear over
// the file's bits (its bias, if any, read as float32), and Weights holds
// only the other parameters, zeroed, so that the float32 copies of the kept
// weights are never allocated. It records the dtypes it read in dtypes.
func newKeepingBF16(cfg Config, where map[string]*stEntry, from map[string]*stFile, dtypes map[safetensors.DType]bool, buf *[]byte) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	kept := map[string]bool{}
	for _, name := range cfg.LinearNames() {
		if e := where[name+".weight"]; e != nil && e.dtype == safetensors.BF16 {
			kept[name+".weight"], kept[name+".bias"] = true, true
		}
	}
	all := cfg.paramSpecs()
	shapes := map[string][]int{}
	var specs []ParamSpec
	for _, s := range all {
		shapes[s.Name] = s.Shape
		if !kept[s.Name] {
			specs = append(specs, s)
		}
	}
	ps, err := NewParamSet(specs)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, Weights: ps, trainable: ps, linears: map[string]Linear{}}
	for _, name := range cfg.LinearNames() {
		if !kept[name+".weight"] {
			m.linears[name] = &DenseLinear{Weight: ps.Get(name + ".weight"), Bias: ps.Get(name + ".bias")}
			continue
		}
		shape := shapes[name+".weight"] // galleon's [in, out]
		in, out := shape[0], shape[1]
		e := where[name+".weight"]
		w := make([]uint16, in*out)
		if err := from[name+".weight"].readBF16(e, w, buf); err != nil {
			return nil, err
		}
		var bias []float32
		if be := where[name+".bias"]; be != nil && shapes[name+".bias"] != nil {
			bias = make([]float32, out)
			if err := from[name+".bias"].readFloats(be, bias, 0, buf); err != nil {
				return nil, err
			}
			dtypes[be.dtype] = true
		}
		l, err := NewBF16Linear(w, in, out, cfg.hfTranspose(name+".weight"), bias)
		if err != nil {
			return nil, err
		}
		m.linears[name] = l
		dtypes[safetensors.BF16] = true
	}
	return m, nil
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
