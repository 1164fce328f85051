package lora

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

// Gradient checkpointing rebuilds each block, adapted layers included, in
// the backward pass: with adapters (dropout on their input) on a float32
// GPT-2 base, a Llama-family base and an int8 base, the checkpointed
// replica's loss and adapter gradients equal the plain replica's bit for
// bit, and Trainer steps leave the same adapter.
func TestGradCheckpointingWithAdapters(t *testing.T) {
	llama := func(t *testing.T) *model.Model {
		c := model.Config{Family: model.FamilyLlama, ModelType: "llama", Vocab: 256, DModel: 24, Layers: 3, Heads: 4, KVHeads: 2,
			SeqLen: 16, Intermediate: 40, LayerNormEps: 1e-5, RopeTheta: 10000, Attention: model.AttentionFlash}
		m, err := model.New(c, 5)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, c := range []struct {
		name string
		base func(t *testing.T) *model.Model
	}{
		{"gpt2", func(t *testing.T) *model.Model { return newBase(t, 32, 2) }},
		{"llama", llama},
		{"int8", func(t *testing.T) *model.Model { m, _ := int8Base(t); return m }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := c.base(t)
			cfg := loraConfig()
			cfg.Dropout = 0.2
			lm, err := Apply(m, cfg)
			if err != nil {
				t.Fatal(err)
			}
			randomizeB(lm.Active(), 4, 0.05)
			const B, T = 2, 13
			plain, err := m.NewReplica(B, T)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			ck, err := m.NewReplicaWith(B, T, model.ReplicaOptions{GradCheckpointing: true})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			for k := range 2 {
				in, tg := randIDs(B*T, uint64(20+k)), randIDs(B*T, uint64(30+k))
				var losses [2]float32
				for j, rep := range []*model.Replica{plain, ck} {
					rep.Dropout.Step, rep.Dropout.Row0 = uint64(k+1), uint64(5*k)
					if losses[j], err = rep.ForwardBackward(in, tg, 0.5); err != nil {
						t.Fatal(err)
					}
				}
				if math.Float32bits(losses[0]) != math.Float32bits(losses[1]) {
					t.Fatalf("micro-batch %d: loss %v with checkpointing, %v without", k, losses[1], losses[0])
				}
				for i := range plain.Grad {
					if math.Float32bits(plain.Grad[i]) != math.Float32bits(ck.Grad[i]) {
						t.Fatalf("micro-batch %d: adapter gradient %d is %v with checkpointing, %v without", k, i, ck.Grad[i], plain.Grad[i])
					}
				}
			}
			if slices.Max(ck.Grad) == 0 && slices.Min(ck.Grad) == 0 {
				t.Fatal("all adapter gradients are zero")
			}
		})
	}

	// Trainer steps.
	train := func(checkpointing bool) []float32 {
		m := newBase(t, 32, 2)
		cfg := loraConfig()
		cfg.Dropout = 0.1
		if _, err := Apply(m, cfg); err != nil {
			t.Fatal(err)
		}
		tr, err := model.NewTrainer(m, model.TrainConfig{Batch: 2, Accum: 2, Schedule: model.Schedule{Peak: 1e-2, Warmup: 1},
			AdamW: model.DefaultAdamW(), ClipNorm: 1, GradCheckpointing: checkpointing})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		data, err := model.NewSampler(slices.Repeat([]byte("func main() { fmt.Println(42) }\n"), 40), m.Config.SeqLen, 3)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Train(context.Background(), data, 3, nil); err != nil {
			t.Fatal(err)
		}
		return slices.Clone(m.Trainable().Data)
	}
	a, b := train(false), train(true)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("adapter weight %d is %v after checkpointed steps, %v after plain ones", i, b[i], a[i])
		}
	}
}
