package model

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/internal/cputime"
)

// randomBatches feeds random token windows over a vocabulary of v tokens
// (256 when v is 0), as the PyTorch reference benchmark that BenchmarkTrainStep
// is compared with does.
type randomBatches struct {
	r *rand.Rand
	v int
}

func (b randomBatches) NextBatch(inputs, targets []int32) error {
	v := b.v
	if v == 0 {
		v = 256
	}
	for i := range inputs {
		inputs[i] = int32(b.r.IntN(v))
		targets[i] = int32(b.r.IntN(v))
	}
	return nil
}

// BenchmarkTrainStep times one full optimizer step (forward, backward,
// AdamW) of a preset at its benchmark batch size and reports tokens/s, the
// number compared with the same step in PyTorch (random windows as
// randomBatches, the preset's shape; for small: d_model 256, 4 layers, 8
// heads, 256 tokens, batch 8); gpt2-124m and smollm2-135m are described at
// benchTrainStepHF. The -bf16 variants (tiny-bf16, small-bf16) are the
// same steps in mixed precision (TrainConfig.Precision = PrecisionBF16),
// and tiny-naive and small-naive the steps with materialized attention
// (AttentionNaive; a sibling, not a sub-benchmark, so that 'TrainStep/small$'
// times and profiles the flash step alone):
//
//	go test ./model -run '^$' -bench 'TrainStep/small(-bf16)?$' -count 6
func BenchmarkTrainStep(b *testing.B) {
	b.Run("gpt2-124m", func(b *testing.B) { benchTrainStepHF(b, GPT2_124M(), PrecisionFP32) })
	b.Run("gpt2-124m-bf16", func(b *testing.B) { benchTrainStepHF(b, GPT2_124M(), PrecisionBF16) })
	b.Run("smollm2-135m", func(b *testing.B) { benchTrainStepHF(b, SmolLM2_135M(), PrecisionFP32) })
	b.Run("smollm2-135m-bf16", func(b *testing.B) { benchTrainStepHF(b, SmolLM2_135M(), PrecisionBF16) })
	for _, name := range []string{"tiny", "small"} {
		for _, v := range []struct {
			impl AttentionImpl
			prec Precision
			sub  string
		}{{AttentionFlash, PrecisionFP32, ""}, {AttentionFlash, PrecisionBF16, "-bf16"}, {AttentionNaive, PrecisionFP32, "-naive"}} {
			impl, sub := v.impl, name+v.sub
			b.Run(sub, func(b *testing.B) {
				p, err := LookupPreset(name)
				if err != nil {
					b.Fatal(err)
				}
				cfg := p.Config
				cfg.Attention = impl
				m, err := New(cfg, 1)
				if err != nil {
					b.Fatal(err)
				}
				tr, err := NewTrainer(m, TrainConfig{Batch: 8, Schedule: Schedule{Peak: 1e-3}, AdamW: DefaultAdamW(), Precision: v.prec})
				if err != nil {
					b.Fatal(err)
				}
				defer tr.Close()
				data := randomBatches{r: rand.New(rand.NewPCG(1, 1))}
				ctx := context.Background()
				for i := 0; i < 3; i++ { // warm the pools, as the anchor does
					if _, err := tr.Step(ctx, data); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				c0 := cputime.Process()
				for i := 0; i < b.N; i++ {
					if _, err := tr.Step(ctx, data); err != nil {
						b.Fatal(err)
					}
				}
				tokens := float64(b.N * 8 * cfg.SeqLen)
				b.ReportMetric(tokens/b.Elapsed().Seconds(), "tokens/s")
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
				reportCPU(b, c0)
			})
		}
	}
}

// BenchmarkTrainStep/gpt2-124m and /smollm2-135m time one full
// fine-tuning step (forward, backward, AdamW over every weight) of GPT-2
// 124M and SmolLM2-135M shapes at B=4, T=256 on random ids with random
// weights, the numbers compared with torch_gpt.py 768 12 12 256 4 3 50257
// and torch_llama.py full 4 256 3 (run through benchTrainStepHF); the
// -bf16 variants train in mixed precision (PrecisionBF16).
func benchTrainStepHF(b *testing.B, cfg Config, prec Precision) {
	const B, T = 4, 256
	m, err := New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTrainer(m, TrainConfig{Batch: B, SeqLen: T, Schedule: Schedule{Peak: 1e-4}, AdamW: DefaultAdamW(), Precision: prec})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	data := randomBatches{r: rand.New(rand.NewPCG(1, 1)), v: cfg.Vocab}
	ctx := context.Background()
	if _, err := tr.Step(ctx, data); err != nil { // warm the pools, as the anchors do
		b.Fatal(err)
	}
	b.ResetTimer()
	c0 := cputime.Process()
	for i := 0; i < b.N; i++ {
		if _, err := tr.Step(ctx, data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*B*T)/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
	reportCPU(b, c0)
}

// reportCPU reports the process's CPU seconds per step since c0: on a
// machine shared with other work it varies far less than the wall time.
func reportCPU(b *testing.B, c0 time.Duration) {
	if c := cputime.Process() - c0; c > 0 {
		b.ReportMetric(c.Seconds()/float64(b.N), "cpu-s/step")
	}
}

func ExampleModel_Generate() {
	p, _ := LookupPreset("tiny")
	m, _ := New(p.Config, 1)
	out, _ := m.Generate(context.Background(), Encode("func "), 8, SampleOptions{})
	fmt.Println(len(out))
	// Output: 8
}

// BenchmarkSample draws one token from a 32,000-token vocabulary (Llama
// 2's) with the command line's default filters and with top-p alone, the
// per-token cost sampling adds to generation. On the development machine
// (2 cores, shared) the medians of three runs were 0.44 ms (top-k 40,
// top-p 0.95) and 4.2 ms (top-p 0.95 alone, a nucleus of thousands of
// tokens on these logits); sorting the whole vocabulary, as the sampler
// did before, took 23 ms for either in the same run.
func BenchmarkSample(b *testing.B) {
	const V = 32000
	r := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, V)
	for i := range logits {
		logits[i] = float32(r.NormFloat64()) * 3
	}
	for _, c := range []struct {
		name string
		opts SampleOptions
	}{
		{"topk40-topp0.95", SampleOptions{Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: 1}},
		{"topp0.95", SampleOptions{Temperature: 0.8, TopP: 0.95, Seed: 1}},
		{"all", SampleOptions{Temperature: 0.8, Seed: 1}},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := newSampler(V, c.opts)
			for b.Loop() {
				s.pick(logits)
			}
		})
	}
}
