package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/parallel"
)

// pretrainResult is the data-parallel pretraining run.
type pretrainResult struct {
	Preset          string  `json:"preset"`
	Params          int     `json:"params"`
	Workers         int     `json:"workers"`
	Steps           int     `json:"steps"`
	Seconds         float64 `json:"seconds"`
	OneWorkerTokS   float64 `json:"one_worker_tokens_per_s"` // one worker, multi-threaded GEMM: the best single-worker setting
	TokS            float64 `json:"tokens_per_s"`
	FinalTrainBPB   float64 `json:"final_train_bits_per_byte"`
	ValBPB          float64 `json:"val_bits_per_byte"`
	Sample          string  `json:"sample"`
	Checkpoint      string  `json:"checkpoint,omitempty"`
	CheckpointBytes int64   `json:"checkpoint_bytes"`
	Plot            string  `json:"plot,omitempty"`
}

const rateSteps = 100 // steps timed for the one-worker rate (after one warm-up step)

// pretrain trains the tiny preset with flash attention and o.workers
// data-parallel workers, each on one core, and saves it. It first times one
// worker with the kernels' default threading on the same batches, the
// comparison a user without data parallelism would make.
func pretrain(ctx context.Context, o options, out string, res *result, stderr io.Writer) (*model.Model, *model.Corpus, error) {
	corpus, err := model.LoadCorpus(ctx, model.CorpusOptions{Root: o.corpusRoot})
	if err != nil {
		return nil, nil, err
	}
	preset, err := model.LookupPreset("tiny")
	if err != nil {
		return nil, nil, err
	}
	cfg := preset.Config
	cfg.Attention = model.AttentionFlash
	p := &res.Pretrain
	*p = pretrainResult{Preset: preset.Name, Workers: o.workers, Steps: o.pretrainSteps}
	trainCfg := func(workers int) parallel.Config {
		return parallel.Config{
			Workers:  workers,
			Batch:    preset.Batch,
			Schedule: model.Schedule{Peak: 3e-3, Warmup: min(100, o.pretrainSteps/10), Total: o.pretrainSteps, MinRatio: 0.1},
			AdamW:    model.DefaultAdamW(),
			ClipNorm: 1,
		}
	}

	if p.OneWorkerTokS, err = oneWorkerRate(ctx, cfg, trainCfg(1), corpus.Train, o.seed, min(rateSteps, o.pretrainSteps)); err != nil {
		return nil, nil, err
	}

	data, err := model.NewSampler(corpus.Train, cfg.SeqLen, o.seed)
	if err != nil {
		return nil, nil, err
	}
	m, err := model.New(cfg, o.seed)
	if err != nil {
		return nil, nil, err
	}
	p.Params = m.NumParams()
	// Each worker keeps to one core during training; evaluation and
	// generation afterwards use them all again.
	prevThreads := parallel.LimitKernelThreads(1)
	tr, err := parallel.New(m, trainCfg(o.workers))
	if err != nil {
		parallel.LimitKernelThreads(prevThreads)
		return nil, nil, err
	}
	defer tr.Close()
	bar := report.NewProgress(stderr, fmt.Sprintf("pretrain ×%d", o.workers))
	var (
		start      time.Time
		tokens     int
		ema        = report.EMA{Decay: 0.98}
		curveX     []float64
		curveY     []float64
		done       int
		plotStride = max(1, o.pretrainSteps/200)
	)
	err = tr.Train(ctx, data, o.pretrainSteps, func(st model.StepStats) {
		done++
		if done == 1 {
			start = time.Now() // the first step builds graphs and pools
		} else {
			tokens += st.Tokens
		}
		loss := model.BitsPerByte(ema.Add(st.Loss))
		if done%plotStride == 0 {
			curveX, curveY = append(curveX, float64(done)), append(curveY, loss)
		}
		status := fmt.Sprintf("loss %.3f bpb", loss)
		if done > 1 {
			status += fmt.Sprintf(", %.0f tokens/s", float64(tokens)/time.Since(start).Seconds())
		}
		bar.Update(float64(done)/float64(o.pretrainSteps), status)
	})
	parallel.LimitKernelThreads(prevThreads)
	if err != nil {
		bar.Finish("stopped")
		return nil, nil, err
	}
	p.Seconds = time.Since(start).Seconds()
	p.TokS = float64(tokens) / p.Seconds
	p.FinalTrainBPB = model.BitsPerByte(ema.Value())
	bar.Finish(fmt.Sprintf("%d steps, %.0f tokens/s", o.pretrainSteps, p.TokS))

	valIn, valTg, err := model.ValidationWindows(corpus.Val, o.evalWindows, cfg.SeqLen, o.seed)
	if err != nil {
		return nil, nil, err
	}
	if p.ValBPB, err = m.Evaluate(valIn, valTg, cfg.SeqLen, 16); err != nil {
		return nil, nil, err
	}
	const prompt = "func "
	gen, err := m.Generate(ctx, model.Encode(prompt), o.sampleLen, model.SampleOptions{Temperature: 0.8, TopK: 40, Seed: o.seed})
	if err != nil {
		return nil, nil, err
	}
	p.Sample = prompt + model.Decode(gen)

	ckpt := filepath.Join(out, "tiny.safetensors")
	if err := m.Save(ckpt); err != nil {
		return nil, nil, err
	}
	if p.CheckpointBytes, err = fileSize(ckpt); err != nil {
		return nil, nil, err
	}
	plot := filepath.Join(out, "pretrain.png")
	err = report.Plot{
		Title:  fmt.Sprintf("tiny GPT, %d data-parallel workers, flash attention", o.workers),
		XLabel: "step", YLabel: "training bits per byte (EMA)",
		Series: []report.Series{{Name: "training", X: curveX, Y: curveY}},
	}.SavePNG(plot)
	if err != nil {
		return nil, nil, err
	}
	if o.out != "" {
		p.Checkpoint, p.Plot = ckpt, plot
	}
	return m, corpus, nil
}

// oneWorkerRate trains a throwaway model of the same configuration with a
// single worker for steps steps after a warm-up step and returns its
// tokens/s.
func oneWorkerRate(ctx context.Context, cfg model.Config, tc parallel.Config, train []byte, seed uint64, steps int) (float64, error) {
	m, err := model.New(cfg, seed)
	if err != nil {
		return 0, err
	}
	tr, err := parallel.New(m, tc)
	if err != nil {
		return 0, err
	}
	defer tr.Close()
	data, err := model.NewSampler(train, cfg.SeqLen, seed)
	if err != nil {
		return 0, err
	}
	if err := tr.Train(ctx, data, 1, nil); err != nil {
		return 0, err
	}
	tokens := 0
	start := time.Now()
	if err := tr.Train(ctx, data, steps, func(st model.StepStats) { tokens += st.Tokens }); err != nil {
		return 0, err
	}
	return float64(tokens) / time.Since(start).Seconds(), nil
}
