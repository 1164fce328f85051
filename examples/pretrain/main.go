// Command pretrain trains a GPT preset on the Go standard library's source
// (the corpus rules of the PyTorch anchor, so results compare), showing a
// progress bar, evaluating validation bits per byte as it goes, and writing
// a training checkpoint, a loss-curve PNG and a sample of generated Go.
//
//	go run ./examples/pretrain -preset tiny -minutes 5
//	go run ./examples/pretrain -resume out/pretrain/checkpoint.safetensors -steps 4000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
)

type options struct {
	preset      string
	steps       int
	minutes     float64
	batch       int
	lr          float64
	warmup      int
	decay       string
	out         string
	seed        uint64
	resume      string
	evalEvery   int
	attention   string
	sampleLen   int
	jsonOut     bool
	corpusRoot  string
	evalWindows int
}

// result is printed as one JSON line under -json.
type result struct {
	Preset       string  `json:"preset"`
	Steps        int     `json:"steps"`
	Tokens       int     `json:"tokens"`
	Seconds      float64 `json:"seconds"`
	TokensPerSec float64 `json:"tokens_per_s"`
	TrainLoss    float64 `json:"train_loss_nats"`
	ValBPB       float64 `json:"val_bits_per_byte"`
	Checkpoint   string  `json:"checkpoint"`
	Plot         string  `json:"plot"`
	Sample       string  `json:"sample"`
}

func main() {
	var o options
	flag.StringVar(&o.preset, "preset", "tiny", "model preset: tiny, small or medium")
	flag.IntVar(&o.steps, "steps", 0, "optimizer steps to run (0: use -minutes)")
	flag.Float64Var(&o.minutes, "minutes", 3, "wall-clock training budget when -steps is 0")
	flag.IntVar(&o.batch, "batch", 0, "sequences per step (0: the preset's)")
	flag.Float64Var(&o.lr, "lr", 3e-3, "peak learning rate")
	flag.IntVar(&o.warmup, "warmup", 100, "linear warmup steps")
	flag.StringVar(&o.decay, "decay", "cosine", "after warmup: cosine (to 10% of -lr) or none (constant, as the PyTorch anchor)")
	flag.StringVar(&o.out, "out", "out/pretrain", "output directory")
	flag.Uint64Var(&o.seed, "seed", 1, "seed for initialization and data order")
	flag.StringVar(&o.resume, "resume", "", "training checkpoint to resume from")
	flag.IntVar(&o.evalEvery, "eval-every", 250, "evaluate validation bits/byte every N steps")
	flag.IntVar(&o.evalWindows, "eval-windows", 64, "validation windows per evaluation")
	flag.StringVar(&o.attention, "attention", "flash", "attention kernel: flash or naive")
	flag.IntVar(&o.sampleLen, "sample", 300, "bytes of Go to generate at the end")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as one JSON object on the last line")
	flag.StringVar(&o.corpusRoot, "corpus", "", "source root to train on (default: $(go env GOROOT)/src)")
	flag.Parse()

	report.Main("pretrain", o.jsonOut, func(ctx context.Context, stdout, stderr io.Writer) (*result, error) {
		return run(ctx, o, stdout, stderr)
	})
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) (*result, error) {
	if o.steps <= 0 && o.minutes <= 0 {
		return nil, errors.New("give -steps or -minutes")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	say := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }

	corpus, err := model.LoadCorpus(ctx, model.CorpusOptions{Root: o.corpusRoot})
	if err != nil {
		return nil, err
	}
	say("corpus: %d training and %d validation bytes from %s", len(corpus.Train), len(corpus.Val), corpus.Root)

	preset, err := model.LookupPreset(o.preset)
	if err != nil {
		return nil, err
	}
	if o.batch == 0 {
		o.batch = preset.Batch
	}
	var (
		m    *model.Model
		ck   *model.Checkpoint
		cfg  = preset.Config
		data *model.Sampler
	)
	cfg.Attention = model.AttentionImpl(o.attention)
	if o.resume != "" {
		if ck, err = model.LoadCheckpoint(o.resume); err != nil {
			return nil, err
		}
		m = ck.Model
		m.Config.Attention = cfg.Attention
		cfg = m.Config
	} else if m, err = model.New(cfg, o.seed); err != nil {
		return nil, err
	}
	if data, err = model.NewSampler(corpus.Train, cfg.SeqLen, o.seed); err != nil {
		return nil, err
	}
	schedule := model.Schedule{Peak: o.lr, Warmup: o.warmup, MinRatio: 0.1}
	switch o.decay {
	case "none":
	case "cosine":
		schedule.Total = o.steps // for a time budget, fixed once the speed is known
	default:
		return nil, fmt.Errorf("-decay %q: want cosine or none", o.decay)
	}
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: o.batch, Schedule: schedule, AdamW: model.DefaultAdamW(), ClipNorm: 1})
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	if ck != nil {
		if err := tr.Restore(ck); err != nil {
			return nil, err
		}
		if err := data.SetState(ck.Data); err != nil {
			return nil, err
		}
		say("resumed at step %d from %s", ck.Step, o.resume)
	}
	valIn, valTg, err := model.ValidationWindows(corpus.Val, o.evalWindows, cfg.SeqLen, 1)
	if err != nil {
		return nil, err
	}
	evaluate := func() (float64, error) { return m.Evaluate(valIn, valTg, cfg.SeqLen, 8) }
	say("model: %s preset, %d parameters, %s attention, batch %d×%d", o.preset, m.NumParams(), cfg.Attention, o.batch, cfg.SeqLen)

	var (
		trainX, trainY, valX, valY []float64
		emaLoss                    float64
		tokens                     int
		lastStats                  model.StepStats
	)
	bar := report.NewProgress(stderr, "pretrain")
	start := time.Now()
	budget := time.Duration(o.minutes * float64(time.Minute))
	first := tr.StepsDone()
	for {
		done := tr.StepsDone() - first
		elapsed := time.Since(start)
		var frac float64
		if o.steps > 0 {
			if done >= o.steps {
				break
			}
			frac = float64(done) / float64(o.steps)
		} else {
			if elapsed >= budget {
				break
			}
			frac = elapsed.Seconds() / budget.Seconds()
			if o.decay == "cosine" && done == 50 {
				// Fix the cosine's length from the measured speed.
				schedule.Total = first + int(float64(done)/elapsed.Seconds()*budget.Seconds())
				tr.SetSchedule(schedule)
			}
		}
		st, err := tr.Step(ctx, data)
		if err != nil {
			bar.Finish("stopped")
			return nil, err
		}
		lastStats = st
		tokens += st.Tokens
		if emaLoss == 0 {
			emaLoss = st.Loss
		}
		emaLoss = 0.95*emaLoss + 0.05*st.Loss
		trainX = append(trainX, float64(st.Step))
		trainY = append(trainY, model.BitsPerByte(emaLoss))
		if st.Step%o.evalEvery == 0 {
			bpb, err := evaluate()
			if err != nil {
				return nil, err
			}
			valX, valY = append(valX, float64(st.Step)), append(valY, bpb)
		}
		tps := float64(tokens) / time.Since(start).Seconds()
		status := fmt.Sprintf("step %d loss %.3f lr %.2g %.1fk tok/s", st.Step, emaLoss, st.LR, tps/1000)
		if len(valY) > 0 {
			status += fmt.Sprintf(" val %.3f bpb", valY[len(valY)-1])
		}
		bar.Update(frac, status)
	}
	seconds := time.Since(start).Seconds()
	bar.Finish(fmt.Sprintf("%d steps in %.0fs", tr.StepsDone()-first, seconds))

	bpb, err := evaluate()
	if err != nil {
		return nil, err
	}
	if len(valX) == 0 || valX[len(valX)-1] != float64(tr.StepsDone()) {
		valX, valY = append(valX, float64(tr.StepsDone())), append(valY, bpb)
	}
	ckpt := filepath.Join(o.out, "checkpoint.safetensors")
	if err := tr.Save(ckpt, data.State()); err != nil {
		return nil, err
	}
	plotPath := filepath.Join(o.out, "loss.png")
	err = report.Plot{
		Title: fmt.Sprintf("galleon %s on the Go corpus", o.preset), XLabel: "step", YLabel: "bits per byte",
		Series: []report.Series{{Name: "training (EMA)", X: trainX, Y: trainY}, {Name: "validation", X: valX, Y: valY}},
	}.SavePNG(plotPath)
	if err != nil {
		return nil, err
	}
	prompt := "func "
	gen, err := m.Generate(ctx, model.Encode(prompt), o.sampleLen, model.SampleOptions{Temperature: 0.8, TopK: 40, Seed: o.seed})
	if err != nil {
		return nil, err
	}
	sample := prompt + model.Decode(gen)

	fmt.Fprintf(stdout, "steps %d, %d tokens in %.1fs (%.0f tokens/s)\n", tr.StepsDone(), tokens, seconds, float64(tokens)/seconds)
	fmt.Fprintf(stdout, "validation: %.3f bits/byte\n", bpb)
	fmt.Fprintf(stdout, "checkpoint: %s\nloss curve: %s\n", ckpt, plotPath)
	fmt.Fprintf(stdout, "--- sample ---\n%s\n--------------\n", sample)
	return &result{
		Preset: o.preset, Steps: tr.StepsDone(), Tokens: tokens, Seconds: seconds,
		TokensPerSec: float64(tokens) / seconds, TrainLoss: lastStats.Loss, ValBPB: bpb,
		Checkpoint: ckpt, Plot: plotPath, Sample: sample,
	}, nil
}
