package lora

import (
	"context"
	"slices"
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
