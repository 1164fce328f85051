package model

import (
	"math"
	"path/filepath"
	"testing"
)

// TestKeepBF16Embedding: with KeepBF16 a Llama-family BF16 checkpoint's
// token embedding stays bfloat16 (Weights lacks it), the training graph's
// loss is the inference path's on two batches in a row (the embedding
// leaf is refilled for each), gradient checkpointing changes nothing, and
// Model.Save refuses the model. GPT-2, with learned positions, keeps a
// float32 embedding.
func TestKeepBF16Embedding(t *testing.T) {
	for _, k := range hfKinds() {
		if k.dtype != "bfloat16" {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			dir := t.TempDir()
			writeKind(t, k, dir)
			m, err := LoadPretrained(dir, KeepBF16())
			if err != nil {
				t.Fatal(err)
			}
			c := m.Config
			if m.tokensBF16 == nil || len(m.tokensBF16) != c.Vocab*c.DModel || m.Weights.Get(c.TokenEmbeddingName()) != nil {
				t.Fatalf("token embedding: %d bf16 values, float32 param %v", len(m.tokensBF16), m.Weights.Get(c.TokenEmbeddingName()))
			}
			linears := 0
			for _, name := range m.LinearNames() {
				l, _ := m.Linear(name)
				in, out := l.Dims()
				linears += in * out
			}
			if got := m.BF16Params(); got != linears+c.Vocab*c.DModel {
				t.Errorf("BF16Params %d, want %d linear + %d embedding weights", got, linears, c.Vocab*c.DModel)
			}
			B, T := 2, 9
			batch := func(seed int) (ids, targets []int32) {
				ids, targets = make([]int32, B*T), make([]int32, B*T)
				for i := range ids {
					ids[i] = int32((i*seed + 3) % c.Vocab)
					targets[i] = int32((i*7 + seed) % c.Vocab)
				}
				return ids, targets
			}
			var grads [2][]float32
			for ck, gc := range []bool{false, true} {
				r, err := m.NewReplicaWith(B, T, ReplicaOptions{GradCheckpointing: gc})
				if err != nil {
					t.Fatal(err)
				}
				for _, seed := range []int{5, 11} {
					ids, targets := batch(seed)
					r.ZeroGrad()
					got, err := r.ForwardBackward(ids, targets, 1)
					if err != nil {
						t.Fatal(err)
					}
					want, err := m.Loss(ids, targets, B, T)
					if err != nil {
						t.Fatal(err)
					}
					if math.Abs(float64(got)-want) > 1e-5*math.Abs(want) {
						t.Errorf("checkpointing %t, batch %d: graph loss %v, inference loss %v", gc, seed, got, want)
					}
				}
				grads[ck] = append([]float32(nil), r.Grad...)
				r.Close()
			}
			for i := range grads[0] {
				if grads[0][i] != grads[1][i] {
					t.Fatalf("gradient %d: %v without checkpointing, %v with", i, grads[0][i], grads[1][i])
				}
			}
			if err := m.Save(filepath.Join(t.TempDir(), "m.safetensors")); err == nil {
				t.Error("Model.Save wrote a model without its bf16 tensors")
			}
		})
	}
	gpt := hfKinds()[0]
	gpt.dtype = "bfloat16"
	dir := t.TempDir()
	writeKind(t, gpt, dir)
	m, err := LoadPretrained(dir, KeepBF16())
	if err != nil {
		t.Fatal(err)
	}
	if m.tokensBF16 != nil || m.Weights.Get(m.Config.TokenEmbeddingName()) == nil {
		t.Error("GPT-2's token embedding is not float32")
	}
	if _, err := m.Loss([]int32{1, 2, 3}, []int32{2, 3, 4}, 1, 3); err != nil {
		t.Fatal(err)
	}
}

// TestInferenceLossSum: a reused session's LossSum over several batches
// gives Model.Loss of each (sum/count), and after the first batch
// allocates only a few small values (4 today), never a new session or its
// activations.
func TestInferenceLossSum(t *testing.T) {
	k := hfKinds()[1]
	dir := t.TempDir()
	writeKind(t, k, dir)
	m, err := LoadPretrained(dir, KeepBF16())
	if err != nil {
		t.Fatal(err)
	}
	B, T, V := 2, 8, m.Config.Vocab
	inf, err := m.NewInference(B, T)
	if err != nil {
		t.Fatal(err)
	}
	ids, targets := make([]int32, B*T), make([]int32, B*T)
	for seed := range 3 {
		for i := range ids {
			ids[i], targets[i] = int32((i*7+seed)%V), int32((i*3+seed+1)%V)
		}
		targets[seed] = -1
		inf.Reset()
		sum, count, err := inf.LossSum(ids, targets, T)
		if err != nil {
			t.Fatal(err)
		}
		want, err := m.Loss(ids, targets, B, T)
		if err != nil {
			t.Fatal(err)
		}
		if count != B*T-1 || math.Abs(sum/float64(count)-want) > 1e-6*math.Abs(want) {
			t.Errorf("batch %d: %v over %d targets, Model.Loss %v", seed, sum/float64(count), count, want)
		}
	}
	if allocs := testing.AllocsPerRun(3, func() {
		inf.Reset()
		if _, _, err := inf.LossSum(ids, targets, T); err != nil {
			t.Fatal(err)
		}
	}); allocs > 10 {
		t.Errorf("%v allocations per reused batch", allocs)
	}
	if _, _, err := inf.LossSum(ids, targets[:3], T); err == nil {
		t.Error("3 targets for 2×8 tokens accepted")
	}
}
