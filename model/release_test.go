package model

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// ownedLinear is a layer with its own copy of a dense layer's weights, the
// way an int8 layer owns its storage: it implements WeightOwner.
type ownedLinear struct {
	DenseLinear
	owns bool
}

func (l *ownedLinear) OwnsWeights() bool { return l.owns }

// wrapLinear wraps a layer as LoRA's layers do, exposing it through Base.
type wrapLinear struct{ *DenseLinear }

func (w wrapLinear) Base() Linear { return w.DenseLinear }

func ownCopy(t *testing.T, m *Model, name string, owns bool) *ownedLinear {
	t.Helper()
	l, err := m.Linear(name)
	if err != nil {
		t.Fatal(err)
	}
	d := l.(*DenseLinear)
	cp := func(p *Param) *Param {
		return &Param{Name: "test.owned." + p.Name, Shape: slices.Clone(p.Shape), Data: slices.Clone(p.Data)}
	}
	return &ownedLinear{DenseLinear: DenseLinear{Weight: cp(d.Weight), Bias: cp(d.Bias)}, owns: owns}
}

func graphLogits(t *testing.T, m *Model, ids []int32, B, T int) []float32 {
	t.Helper()
	r, err := m.NewReplica(B, T)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ForwardBackward(ids, ids, 1); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(r.Logits())
}

// TestReleaseReplaced: only the parameters of modules whose layers own
// their weights are freed, the model computes the same logits on both
// paths afterwards, trains, refuses dense layers over freed parameters,
// and leaves everything else where it was.
func TestReleaseReplaced(t *testing.T) {
	m := testModel(t, nil)
	const B, T = 2, 11
	ids := randIDs(rand.New(rand.NewPCG(1, 1)), B*T)
	if n, err := m.ReleaseReplaced(); err != nil || n != 0 {
		t.Fatalf("nothing replaced: freed %d, %v", n, err)
	}

	b0, b1 := BlockName(0), BlockName(1)
	owned := []string{b0 + ".attn.c_attn", b0 + ".mlp.c_fc", b1 + ".mlp.c_proj"}
	for _, name := range owned {
		if err := m.SetLinear(name, ownCopy(t, m, name, true)); err != nil {
			t.Fatal(err)
		}
	}
	// A layer that does not own its weights keeps them, and so does a
	// module whose parameters another (wrapped) dense layer reads.
	if err := m.SetLinear(b0+".mlp.c_proj", ownCopy(t, m, b0+".mlp.c_proj", false)); err != nil {
		t.Fatal(err)
	}
	shared := b1 + ".attn.c_proj"
	sharedDense, _ := m.Linear(shared)
	if err := m.SetLinear(b0+".attn.c_proj", wrapLinear{sharedDense.(*DenseLinear)}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetLinear(shared, ownCopy(t, m, shared, true)); err != nil {
		t.Fatal(err)
	}

	oldDense, _ := m.Linear(b1 + ".attn.c_attn") // stays dense
	inf, graph := logits(t, m, ids, B, T), graphLogits(t, m, ids, B, T)
	before := map[string][]float32{}
	for _, p := range m.Weights.Params {
		before[p.Name] = slices.Clone(p.Data)
	}
	oldLen := m.NumParams()
	var want int64
	for _, name := range owned {
		for _, s := range []string{".weight", ".bias"} {
			want += 4 * int64(m.Weights.Get(name+s).Size())
		}
	}
	oldWeight := m.Weights.Get(owned[0] + ".weight")

	freed, err := m.ReleaseReplaced()
	if err != nil {
		t.Fatal(err)
	}
	if freed != want {
		t.Errorf("freed %d bytes, want %d", freed, want)
	}
	if got := int64(oldLen-m.NumParams()) * 4; got != want || len(m.Weights.Data) != m.NumParams() {
		t.Errorf("weights shrank by %d bytes (buffer %d of %d), want %d", got, len(m.Weights.Data), m.NumParams(), want)
	}
	for name, data := range before {
		p := m.Weights.Get(name)
		gone := slices.ContainsFunc(owned, func(o string) bool { return name == o+".weight" || name == o+".bias" })
		if gone {
			if p != nil {
				t.Errorf("%s was not released", name)
			}
			continue
		}
		if p == nil {
			t.Fatalf("%s was released", name)
		}
		if !slices.Equal(p.Data, data) || &p.Data[0] != &m.Weights.Data[p.Offset] || len(p.Data) != p.Size() {
			t.Errorf("%s moved wrongly", name)
		}
	}
	if oldWeight.Data != nil {
		t.Error("a released parameter kept its data")
	}
	if d, _ := m.Linear(b1 + ".attn.c_attn"); d != oldDense {
		t.Error("a dense layer was replaced")
	}
	if d := maxAbsDiff(logits(t, m, ids, B, T), inf); d != 0 {
		t.Errorf("inference logits moved by %g", d)
	}
	if d := maxAbsDiff(graphLogits(t, m, ids, B, T), graph); d != 0 {
		t.Errorf("graph logits moved by %g", d)
	}
	// A dense layer over a released parameter is refused; one over live
	// parameters is not.
	bad := &DenseLinear{Weight: oldWeight, Bias: m.Weights.Get(b1 + ".attn.c_attn.bias")}
	if err := m.SetLinear(owned[0], bad); err == nil {
		t.Error("SetLinear accepted a dense layer over released parameters")
	}
	if err := m.SetLinear(b1+".attn.c_attn", oldDense); err != nil {
		t.Error(err)
	}
	// Full training of what remains works on the compacted set.
	tr, err := NewTrainer(m, TrainConfig{Batch: 2, SeqLen: T, Schedule: Schedule{Peak: 1e-3, Total: 2}, AdamW: DefaultAdamW()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if len(tr.Replica.Grad) != m.NumParams() {
		t.Errorf("gradient buffer %d, want %d", len(tr.Replica.Grad), m.NumParams())
	}
	s, err := NewSampler(syntheticText(4000), T, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	// Save refuses a model whose file Load would reject, and writes nothing.
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := m.Save(path); err == nil {
		t.Error("saving a released model succeeded")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused save left a file: %v", err)
	}
	// Releasing again frees nothing more.
	if n, err := m.ReleaseReplaced(); err != nil || n != 0 {
		t.Errorf("second release: %d, %v", n, err)
	}
}

func logits(t *testing.T, m *Model, ids []int32, B, T int) []float32 {
	t.Helper()
	out, err := m.Logits(ids, B, T)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
