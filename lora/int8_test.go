package lora

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/quant"
)

// int8Base returns a small model whose linear layers are quant's int8
// layers (weight-only int8: activations stay float32).
func int8Base(t testing.TB) (*model.Model, map[string]*quant.Linear) {
	t.Helper()
	m := newBase(t, 32, 2)
	layers := map[string]*quant.Linear{}
	for _, name := range m.LinearNames() {
		l, err := m.Linear(name)
		if err != nil {
			t.Fatal(err)
		}
		d := l.(*model.DenseLinear)
		in, out := d.Dims()
		q, err := quant.NewLinear(d.Weight.Data, d.Bias.Data, in, out, quant.LinearOptions{Act: quant.ActFloat})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetLinear(name, q); err != nil {
			t.Fatal(err)
		}
		layers[name] = q
	}
	return m, layers
}

// TestInt8Base: LoRA on an int8 base trains without touching the int8
// weights, a zero adapter leaves the logits exact, and merging requantizes
// with a reported error that bounds the change of the logits; unmerge puts
// the original int8 layers back.
func TestInt8Base(t *testing.T) {
	const B, T = 2, 16
	m, q := int8Base(t)
	ids := randIDs(B*T, 11)
	baseLogits := logits(t, m, ids, B, T)
	int8Data := map[string][]int8{}
	for name, l := range q {
		int8Data[name] = slices.Clone(l.Weight.Data)
	}
	cfg := loraConfig()
	cfg.Dropout = 0.1
	lm, err := Apply(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := logits(t, m, ids, B, T); !slices.Equal(got, baseLogits) {
		t.Fatalf("B = 0 on an int8 base: logits differ by %g", maxDiff(got, baseLogits))
	}

	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: 2, SeqLen: 16, Schedule: model.Schedule{Peak: 1e-2, Total: 4}, AdamW: model.DefaultAdamW()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if len(tr.Replica.Grad) != lm.Active().NumParams() {
		t.Errorf("gradient buffer %d, want the adapter's %d", len(tr.Replica.Grad), lm.Active().NumParams())
	}
	data := make([]byte, 2048)
	for i := range data {
		data[i] = byte("if err != nil { return err }\n"[i%29])
	}
	s, err := model.NewSampler(data, 16, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, err := tr.Step(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	for name, l := range q {
		if !slices.Equal(l.Weight.Data, int8Data[name]) {
			t.Errorf("%s: training changed the int8 weight", name)
		}
	}
	randomizeB(lm.Active(), 8, 0.05) // a clearly visible update
	adapted := logits(t, m, ids, B, T)

	rep, err := lm.Merge()
	if err != nil {
		t.Fatal(err)
	}
	var maxScale float64
	for _, mod := range lm.Active().Modules {
		nl := lm.layers[mod].base.(*quant.Linear)
		if nl == q[mod] {
			t.Fatalf("%s: merge did not requantize", mod)
		}
		for _, s := range nl.Weight.Scale {
			maxScale = max(maxScale, float64(s))
		}
	}
	if !(rep.MaxAbsErr > 0) || rep.MaxAbsErr > maxScale/2*(1+1e-5) {
		t.Errorf("requantization error %g, want in (0, half the largest step %g]", rep.MaxAbsErr, maxScale/2)
	}
	merged := logits(t, m, ids, B, T)
	d := maxDiff(merged, adapted)
	if d > 0.05 {
		t.Errorf("merged int8 logits differ from the adapted ones by %g", d)
	}
	t.Logf("int8 merge: max weight error %.3g, max logit change %.3g", rep.MaxAbsErr, d)
	if _, err := lm.Unmerge(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range lm.Active().Modules {
		if lm.layers[mod].base != q[mod] {
			t.Errorf("%s: unmerge did not restore the original int8 layer", mod)
		}
	}
	if got := logits(t, m, ids, B, T); maxDiff(got, adapted) > 1e-5 {
		t.Errorf("after unmerge the logits moved by %g", maxDiff(got, adapted))
	}
	plain, _, err := lm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range plain.LinearNames() {
		l, _ := plain.Linear(name)
		if _, ok := l.(*quant.Linear); !ok {
			t.Fatalf("%s is a %T after merge-and-unload, want an int8 layer", name, l)
		}
	}
	if d := maxDiff(logits(t, plain, ids, B, T), merged); d > 1e-6 {
		t.Errorf("unloaded int8 model differs from the merged one by %g", d)
	}
}

// TestInt8BaseReleasedGradients: with the int8 base's float32 copies freed
// (model.Model.ReleaseReplaced, which sees through the adapted layers), a
// zero adapter gives the base logits on both paths, the adapter gradients
// of the frozen int8 op's graph match finite differences of the inference
// loss, training runs, and merge-and-unload still gives int8 layers.
func TestInt8BaseReleasedGradients(t *testing.T) {
	const B, T = 2, 8
	m, q := int8Base(t)
	ids, tg := randIDs(B*T, 6), randIDs(B*T, 7)
	baseLogits := logits(t, m, ids, B, T)
	lm, err := Apply(m, loraConfig())
	if err != nil {
		t.Fatal(err)
	}
	before := m.NumParams()
	freed, err := m.ReleaseReplaced()
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, l := range q {
		want += 4 * int64(l.In*l.Out+l.Out)
	}
	if freed != want || int64(before-m.NumParams())*4 != want {
		t.Fatalf("released %d bytes (%d parameters), want %d", freed, before-m.NumParams(), want)
	}
	if got := logits(t, m, ids, B, T); !slices.Equal(got, baseLogits) {
		t.Fatalf("B = 0 after the release: logits differ by %g", maxDiff(got, baseLogits))
	}
	r, err := m.NewReplica(B, T)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ForwardBackward(ids, tg, 1); err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(r.Logits(), baseLogits); d > 1e-4 {
		t.Fatalf("B = 0: graph logits differ from the inference path's by %g", d)
	}

	a := lm.Active()
	randomizeB(a, 4, 0.3)
	r.ZeroGrad()
	if _, err := r.ForwardBackward(ids, tg, 1); err != nil {
		t.Fatal(err)
	}
	// The largest gradient of each matrix against central differences.
	checked := 0
	for _, p := range a.Params.Params {
		best, g := p.Offset, float32(0)
		for i := p.Offset; i < p.Offset+p.Size(); i++ {
			if math.Abs(float64(r.Grad[i])) > math.Abs(float64(g)) {
				best, g = i, r.Grad[i]
			}
		}
		if math.Abs(float64(g)) < 5e-3 {
			continue
		}
		const eps = 2e-3
		old := a.Params.Data[best]
		a.Params.Data[best] = old + eps
		lp, err := m.Loss(ids, tg, B, T)
		if err != nil {
			t.Fatal(err)
		}
		a.Params.Data[best] = old - eps
		lmi, err := m.Loss(ids, tg, B, T)
		if err != nil {
			t.Fatal(err)
		}
		a.Params.Data[best] = old
		fd := (lp - lmi) / (2 * eps)
		if d := math.Abs(float64(g) - fd); d > 0.03*math.Abs(fd)+2e-4 {
			t.Errorf("%s: graph gradient %v, finite differences %v", p.Name, g, fd)
		}
		checked++
	}
	if checked < len(a.Params.Params)/2 {
		t.Fatalf("only %d of %d matrices had gradients large enough to check", checked, len(a.Params.Params))
	}

	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: B, SeqLen: T, Schedule: model.Schedule{Peak: 1e-2, Total: 2}, AdamW: model.DefaultAdamW()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s, err := model.NewSampler([]byte(strings.Repeat("if err != nil { return err }\n", 40)), T, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := tr.Step(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	adapted := logits(t, m, ids, B, T)
	plain, _, err := lm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range plain.LinearNames() {
		if l, _ := plain.Linear(name); !isInt8(l) {
			t.Fatalf("%s is a %T after merge-and-unload", name, l)
		}
	}
	if d := maxDiff(logits(t, plain, ids, B, T), adapted); d > 0.05 {
		t.Errorf("merged int8 model differs from the adapted one by %g", d)
	}
}

func isInt8(l model.Linear) bool {
	_, ok := l.(*quant.Linear)
	return ok
}

// TestInt8MergeNonFinite: merging an adapter whose update is not finite
// (NaN or Inf in B, or A·B overflowing float32) into an int8 base is an
// error naming the module, never a report of MaxAbsErr 0, and leaves the
// int8 layer in place.
func TestInt8MergeNonFinite(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(a, b []float32)
	}{
		{"NaN", func(_, b []float32) { b[0] = float32(math.NaN()) }},
		{"Inf", func(_, b []float32) { b[0] = float32(math.Inf(-1)) }},
		{"overflow", func(a, b []float32) {
			for i := range a {
				a[i] = 1e30
			}
			for i := range b {
				b[i] = 1e30
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, q := int8Base(t)
			lm, err := Apply(m, loraConfig())
			if err != nil {
				t.Fatal(err)
			}
			mod := lm.Active().Modules[0]
			tc.set(lm.Active().A(mod).Data, lm.Active().B(mod).Data)
			rep, err := lm.Merge()
			if err == nil || !strings.Contains(err.Error(), mod) {
				t.Fatalf("merge of a non-finite adapter: report %+v, error %v; want an error naming %s", rep, err, mod)
			}
			if lm.layers[mod].base != q[mod] {
				t.Errorf("%s: the failed merge replaced the int8 layer", mod)
			}
		})
	}
}
