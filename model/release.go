package model

import (
	"fmt"
	"sort"
)

// WeightOwner is implemented by linear layers that may keep their weights
// in storage of their own, such as quant's int8 layers (and LoRA layers
// over them). ReleaseReplaced frees the float32 parameters of a module only
// when its layer is a WeightOwner that reports true.
type WeightOwner interface {
	// OwnsWeights reports whether the layer reads none of the model's
	// float32 parameters of its module (<module>.weight, <module>.bias).
	OwnsWeights() bool
}

// ReleaseReplaced frees the float32 weight and bias of every linear module
// whose layer SetLinear replaced by one that owns its weights (a
// WeightOwner reporting true, e.g. quant.Linear): an int8 model then holds
// one byte per linear weight instead of five. It returns the bytes freed.
//
// The released parameters leave Weights, whose buffer is reallocated
// without them (the remaining *Param values stay the same objects, with new
// offsets); NumParams counts the remaining ones. Build replicas, trainers
// and optimizers afterwards: ones built before hold the old buffer and
// layout and must not be used again. The released *Param values lose their
// data, and SetLinear refuses a DenseLinear over them, so a released module
// can only take layers that own their weights (Unload of a LoRA model over
// an int8 base puts the int8 layers back, which is fine).
//
// Model.Save refuses a released model (its file would lack the released
// tensors): save an int8 model with quant.Model.Save and adapters with their
// own package.
func (m *Model) ReleaseReplaced() (freed int64, err error) {
	if m == nil || m.Weights == nil {
		return 0, fmt.Errorf("model: release: nil model")
	}
	// Parameters still read by a dense layer stay, whatever module they
	// belong to.
	used := map[*Param]bool{}
	for _, name := range m.LinearNames() {
		if d, ok := denseUnder(m.linears[name]); ok {
			used[d.Weight] = true
			if d.Bias != nil {
				used[d.Bias] = true
			}
		}
	}
	drop := map[string]bool{}
	for _, name := range m.LinearNames() {
		l := m.linears[name]
		o, ok := l.(WeightOwner)
		if !ok || !o.OwnsWeights() {
			continue
		}
		for _, pn := range []string{name + ".weight", name + ".bias"} {
			if p := m.Weights.Get(pn); p != nil && !used[p] {
				drop[pn] = true
			}
		}
	}
	if len(drop) == 0 {
		return 0, nil
	}
	return m.Weights.release(drop), nil
}

// release removes the named parameters from ps: the kept ones move to a new
// buffer in their order, the removed ones lose their data. It returns the
// bytes freed.
func (ps *ParamSet) release(drop map[string]bool) int64 {
	kept := 0
	for _, p := range ps.Params {
		if !drop[p.Name] {
			kept += p.Size()
		}
	}
	data := make([]float32, kept)
	params := make([]*Param, 0, len(ps.Params))
	index := make(map[string]*Param, len(ps.Params))
	off := 0
	var freed int64
	for _, p := range ps.Params {
		if drop[p.Name] {
			freed += 4 * int64(p.Size())
			p.Data, p.Offset = nil, -1
			continue
		}
		n := p.Size()
		copy(data[off:off+n], p.Data)
		p.Data, p.Offset = data[off:off+n:off+n], off
		params = append(params, p)
		index[p.Name] = p
		off += n
	}
	ps.Data, ps.Params, ps.index = data, params, index
	return freed
}

// denseUnder returns the dense layer l is or wraps (through Base methods,
// as LoRA layers have), if any.
func denseUnder(l Linear) (*DenseLinear, bool) {
	for range 16 {
		switch v := l.(type) {
		case *DenseLinear:
			return v, true
		case interface{ Base() Linear }:
			l = v.Base()
		default:
			return nil, false
		}
	}
	return nil, false
}

// released reports whether p was removed from its set by ReleaseReplaced.
func released(p *Param) bool { return p != nil && p.Data == nil }

// checkLinearParams refuses a dense layer over released parameters.
func checkLinearParams(name string, l Linear) error {
	d, ok := l.(*DenseLinear)
	if !ok {
		return nil
	}
	if d.Weight == nil {
		return fmt.Errorf("model: layer %q: dense layer without a weight", name)
	}
	var gone []string
	for _, p := range []*Param{d.Weight, d.Bias} {
		if released(p) {
			gone = append(gone, p.Name)
		}
	}
	if len(gone) > 0 {
		sort.Strings(gone)
		return fmt.Errorf("model: layer %q: parameters %v were released (ReleaseReplaced); a dense layer cannot use them", name, gone)
	}
	return nil
}
