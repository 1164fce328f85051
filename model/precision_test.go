package model

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// TestResumeIsExactBF16 is TestResumeIsExact in mixed precision: N steps =
// K steps + save + load + N−K steps, bit for bit, as the bf16 operands are
// recomputed from the float32 master weights the checkpoint holds.
func TestResumeIsExactBF16(t *testing.T) {
	const N, K = 5, 2
	cfg := testTrainConfig()
	cfg.Precision = PrecisionBF16
	text := syntheticText(30000)
	run := func(tr *Trainer, s *Sampler, steps int) []float64 {
		var l []float64
		for range steps {
			st, err := tr.Step(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			l = append(l, st.Loss)
		}
		return l
	}
	m := testModel(t, nil)
	tr, err := NewTrainer(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSampler(text, m.Config.SeqLen, 9)
	want := run(tr, s, N)

	m2 := testModel(t, nil)
	tr2, _ := NewTrainer(m2, cfg)
	s2, _ := NewSampler(text, m2.Config.SeqLen, 9)
	got := run(tr2, s2, K)
	path := filepath.Join(t.TempDir(), "ckpt.safetensors")
	if err := tr2.Save(path, s2.State()); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	tr3, err := NewTrainer(ck.Model, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr3.Restore(ck); err != nil {
		t.Fatal(err)
	}
	s3, _ := NewSampler(text, ck.Model.Config.SeqLen, 0)
	if err := s3.SetState(ck.Data); err != nil {
		t.Fatal(err)
	}
	got = append(got, run(tr3, s3, N-K)...)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("step %d: resumed loss %v, uninterrupted %v", i+1, got[i], want[i])
		}
	}
	for i := range m.Weights.Data {
		if m.Weights.Data[i] != ck.Model.Weights.Data[i] {
			t.Fatalf("weight %d differs after resuming", i)
		}
	}
}

// TestPrecisionBF16Gradients compares a bf16 graph's loss and gradients
// with the float32 graph's on the same weights: equal to bf16's rounding,
// and not identical (the bf16 products did run). Gradient checkpointing
// keeps the precision.
func TestPrecisionBF16Gradients(t *testing.T) {
	for _, fam := range []struct {
		name string
		m    *Model
	}{{"gpt2", testModel(t, nil)}, {"llama", mustNew(t, tinyLlama())}} {
		t.Run(fam.name, func(t *testing.T) {
			m := fam.m
			const B, T = 2, 11
			r := rand.New(rand.NewPCG(5, 5))
			in, tg := randIDs(r, B*T), randIDs(r, B*T)
			grads := func(opts ReplicaOptions) (float32, []float32) {
				rep, err := m.NewReplicaWith(B, T, opts)
				if err != nil {
					t.Fatal(err)
				}
				defer rep.Close()
				l, err := rep.ForwardBackward(in, tg, 1)
				if err != nil {
					t.Fatal(err)
				}
				return l, append([]float32(nil), rep.Grad...)
			}
			l32, g32 := grads(ReplicaOptions{})
			l16, g16 := grads(ReplicaOptions{Precision: PrecisionBF16})
			lck, gck := grads(ReplicaOptions{Precision: PrecisionBF16, GradCheckpointing: true})
			if math.Abs(float64(l16-l32)) > 0.01*math.Abs(float64(l32)) {
				t.Fatalf("bf16 loss %v, float32 %v", l16, l32)
			}
			if l16 != lck {
				t.Fatalf("bf16 loss %v, with checkpointing %v", l16, lck)
			}
			var dot, n32, n16, diff float64
			for i := range g32 {
				dot += float64(g32[i]) * float64(g16[i])
				n32 += float64(g32[i]) * float64(g32[i])
				n16 += float64(g16[i]) * float64(g16[i])
				diff += math.Abs(float64(g16[i] - g32[i]))
				if g16[i] != gck[i] {
					t.Fatalf("gradient %d: bf16 %v, with checkpointing %v", i, g16[i], gck[i])
				}
			}
			if cos := dot / math.Sqrt(n32*n16); cos < 0.999 {
				t.Fatalf("bf16 gradient's cosine with float32's is %v", cos)
			}
			if diff == 0 {
				t.Fatal("bf16 gradients equal float32's exactly: the bf16 products did not run")
			}
		})
	}
	if _, err := ParsePrecision("fp8"); err == nil {
		t.Fatal("ParsePrecision accepted fp8")
	}
	for _, p := range []Precision{PrecisionFP32, PrecisionBF16} {
		if q, err := ParsePrecision(p.String()); err != nil || q != p {
			t.Fatalf("ParsePrecision(%q) = %v, %v", p.String(), q, err)
		}
	}
}

func mustNew(t *testing.T, cfg Config) *Model {
	t.Helper()
	m, err := New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
