package model

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// randomBatches feeds random token windows, as the PyTorch anchor
// (anchors/torch_gpt.py) does.
type randomBatches struct{ r *rand.Rand }

func (b randomBatches) NextBatch(inputs, targets []int32) error {
	for i := range inputs {
		inputs[i] = int32(b.r.IntN(256))
		targets[i] = int32(b.r.IntN(256))
	}
	return nil
}

// BenchmarkTrainStep times one full optimizer step (forward, backward,
// AdamW) of a preset at its benchmark batch size and reports tokens/s, the
// number compared with PyTorch: /usr/bin/python3 ../shared/anchors/torch_gpt.py
// (tiny) and torch_gpt.py 256 4 8 256 8 10 (small).
func BenchmarkTrainStep(b *testing.B) {
	for _, name := range []string{"tiny", "small"} {
		for _, impl := range []AttentionImpl{AttentionFlash, AttentionNaive} {
			sub := name
			if impl == AttentionNaive {
				sub += "/naive"
			}
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
				tr, err := NewTrainer(m, TrainConfig{Batch: 8, Schedule: Schedule{Peak: 1e-3}, AdamW: DefaultAdamW()})
				if err != nil {
					b.Fatal(err)
				}
				defer tr.Close()
				data := randomBatches{rand.New(rand.NewPCG(1, 1))}
				ctx := context.Background()
				for i := 0; i < 3; i++ { // warm the pools, as the anchor does
					if _, err := tr.Step(ctx, data); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := tr.Step(ctx, data); err != nil {
						b.Fatal(err)
					}
				}
				tokens := float64(b.N * 8 * cfg.SeqLen)
				b.ReportMetric(tokens/b.Elapsed().Seconds(), "tokens/s")
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
			})
		}
	}
}

func ExampleModel_Generate() {
	p, _ := LookupPreset("tiny")
	m, _ := New(p.Config, 1)
	out, _ := m.Generate(context.Background(), Encode("func "), 8, SampleOptions{})
	fmt.Println(len(out))
	// Output: 8
}
