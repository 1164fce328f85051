package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/galleon-ml/galleon/attention"
	"github.com/galleon-ml/galleon/model"
)

// modelRun is a few training steps of a small GPT at a long context with one
// attention implementation.
type modelRun struct {
	Impl         string  `json:"impl"`
	T            int     `json:"T"`
	Steps        int     `json:"steps"`
	MsPerStep    float64 `json:"ms_per_step"`
	TokensPerSec float64 `json:"tokens_per_s"`
	PeakBytes    int64   `json:"peak_bytes"`
	Loss         float64 `json:"last_loss_nats"`
}

// runModel trains the tiny preset's architecture with its context widened to
// c.ModelT on the Go corpus, batch 1, with flash and (if its score matrices
// fit under the memory cap) naive attention in the training graph. The
// first step warms the buffers and is not timed.
func runModel(c config, stdout, stderr io.Writer) ([]modelRun, error) {
	ctx := context.Background()
	corpus, err := model.LoadCorpus(ctx, model.CorpusOptions{})
	if err != nil {
		return nil, err
	}
	preset, err := model.LookupPreset("tiny")
	if err != nil {
		return nil, err
	}
	cfg := preset.Config
	cfg.SeqLen = c.ModelT
	var runs []modelRun
	for _, impl := range []model.AttentionImpl{model.AttentionFlash, model.AttentionNaive} {
		if impl == model.AttentionNaive {
			// Saved probabilities of every layer plus one layer's backward
			// (two score matrices).
			need := int64(cfg.Layers)*attention.NaiveBytes(1, cfg.Heads, c.ModelT, c.ModelT, false) +
				attention.NaiveBytes(1, cfg.Heads, c.ModelT, c.ModelT, true)
			if need > c.MemCapMiB<<20 {
				fmt.Fprintf(stderr, "model: naive attention at T=%d would need %d MiB, over the cap\n", c.ModelT, need>>20)
				continue
			}
		}
		cfg.Attention = impl
		fmt.Fprintf(stderr, "model: training at T=%d with %s attention\n", c.ModelT, impl)
		run := modelRun{Impl: string(impl), T: c.ModelT, Steps: c.ModelSteps}
		peak, err := peakHeap(func() error {
			m, err := model.New(cfg, 1)
			if err != nil {
				return err
			}
			data, err := model.NewSampler(corpus.Train, c.ModelT, 1)
			if err != nil {
				return err
			}
			tr, err := model.NewTrainer(m, model.TrainConfig{Batch: 1, Schedule: model.Schedule{Peak: 1e-3, Warmup: 1},
				AdamW: model.DefaultAdamW(), ClipNorm: 1})
			if err != nil {
				return err
			}
			defer tr.Close()
			var start time.Time
			for i := 0; i <= c.ModelSteps; i++ {
				if i == 1 {
					start = time.Now()
				}
				st, err := tr.Step(ctx, data)
				if err != nil {
					return err
				}
				run.Loss = st.Loss
			}
			run.MsPerStep = float64(time.Since(start).Microseconds()) / 1e3 / float64(c.ModelSteps)
			run.TokensPerSec = float64(c.ModelT) / (run.MsPerStep / 1e3)
			return nil
		})
		if err != nil {
			return nil, err
		}
		run.PeakBytes = peak
		runs = append(runs, run)
	}
	fmt.Fprintf(stdout, "\nGPT (tiny preset's width: d=%d, %d layers, %d heads) training at T=%d, batch 1:\n", cfg.DModel, cfg.Layers, cfg.Heads, c.ModelT)
	fmt.Fprintf(stdout, "%-6s %12s %12s %12s %10s\n", "attn", "ms/step", "tokens/s", "peak MiB", "loss")
	for _, r := range runs {
		fmt.Fprintf(stdout, "%-6s %12.1f %12.0f %12.1f %10.3f\n", r.Impl, r.MsPerStep, r.TokensPerSec, mib(r.PeakBytes), r.Loss)
	}
	return runs, nil
}
