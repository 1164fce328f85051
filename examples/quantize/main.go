// Command quantize turns a trained galleon model into an int8 one and shows
// what it costs and gains: checkpoint bytes (float32 vs int8), validation
// bits per byte for float32, W8 (int8 weights), W8A8 (int8 weights and
// per-token int8 activations), W8A8 with LLM.int8() outlier decomposition,
// W8A8 with outliers and the output head on the int8 GEMM too, W8A8 with
// static calibrated activations and after quantization-aware training (LSQ,
// next to float32 fine-tuned for as many steps), and generation speed
// float32 vs int8 (the median of alternating runs after a warm-up).
//
//	go run ./examples/pretrain -preset small -steps 2000 -out out/pretrain
//	go run ./examples/quantize -checkpoint out/pretrain/checkpoint.safetensors
//	go run ./examples/quantize -steps 300            # trains a tiny model first
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/quant"
)

type options struct {
	checkpoint   string
	preset       string
	steps        int
	qatSteps     int
	qatLR        float64
	lsq          bool
	threshold    float64
	evalWindows  int
	calibWindows int
	observer     string
	genTokens    int
	genReps      int
	out          string
	seed         uint64
	jsonOut      bool
	corpusRoot   string
}

// row is one line of the quality table.
type row struct {
	Name    string  `json:"name"`
	BPB     float64 `json:"val_bits_per_byte"`
	RelDiff float64 `json:"rel_diff_vs_fp32"`
}

// result is printed as one JSON line under -json.
type result struct {
	Preset          string    `json:"preset"`
	Params          int       `json:"params"`
	FP32Bytes       int64     `json:"fp32_checkpoint_bytes"`
	Int8Bytes       int64     `json:"int8_checkpoint_bytes"`
	BytesRatio      float64   `json:"int8_bytes_ratio"`
	Rows            []row     `json:"bits_per_byte"`
	GenFP32TokPerS  float64   `json:"gen_fp32_tokens_per_s"` // median of GenReps runs
	GenInt8TokPerS  float64   `json:"gen_int8_tokens_per_s"` // median of GenReps runs
	GenReps         int       `json:"gen_reps"`
	GenFP32Runs     []float64 `json:"gen_fp32_tokens_per_s_runs"`
	GenInt8Runs     []float64 `json:"gen_int8_tokens_per_s_runs"`
	QATSteps        int       `json:"qat_steps"`
	Int8Checkpoint  string    `json:"int8_checkpoint"`
	Int8GenerateOut string    `json:"int8_sample"`
}

func main() {
	var o options
	flag.StringVar(&o.checkpoint, "checkpoint", "", "float32 checkpoint from examples/pretrain (empty: train one first)")
	flag.StringVar(&o.preset, "preset", "tiny", "preset to train when no -checkpoint is given")
	flag.IntVar(&o.steps, "steps", 300, "training steps when no -checkpoint is given")
	flag.IntVar(&o.qatSteps, "qat-steps", 100, "quantization-aware fine-tuning steps (0 skips QAT)")
	flag.Float64Var(&o.qatLR, "qat-lr", 2e-4, "QAT learning rate")
	flag.BoolVar(&o.lsq, "lsq", true, "learn the quantization scales in QAT (LSQ); false uses observers")
	flag.Float64Var(&o.threshold, "threshold", quant.DefaultThreshold, "outlier threshold for the W8A8+outliers row")
	flag.IntVar(&o.evalWindows, "eval-windows", 64, "validation windows")
	flag.IntVar(&o.calibWindows, "calib-windows", 16, "calibration windows (from the training split)")
	flag.StringVar(&o.observer, "observer", "mse", "static calibration observer: minmax, ema, percentile or mse")
	flag.IntVar(&o.genTokens, "gen-tokens", 200, "tokens to generate for the speed comparison")
	flag.IntVar(&o.genReps, "gen-reps", 5, "timed generation runs of each model (alternating fp32/int8, after a warm-up of each); the median is reported")
	flag.StringVar(&o.out, "out", "out/quantize", "output directory")
	flag.Uint64Var(&o.seed, "seed", 1, "seed")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as one JSON object on the last line")
	flag.StringVar(&o.corpusRoot, "corpus", "", "source root (default: $(go env GOROOT)/src)")
	flag.Parse()

	report.Main("quantize", o.jsonOut, func(ctx context.Context, stdout, stderr io.Writer) (*result, error) {
		return run(ctx, o, stdout, stderr)
	})
}

func newObserver(name string) (func() quant.Observer, error) {
	switch name {
	case "minmax":
		return func() quant.Observer { return &quant.MinMax{} }, nil
	case "ema":
		return func() quant.Observer { return &quant.MovingAverageMinMax{} }, nil
	case "percentile":
		return func() quant.Observer { return &quant.Percentile{P: 99.99} }, nil
	case "mse":
		return func() quant.Observer { return &quant.MSE{} }, nil
	}
	return nil, fmt.Errorf("-observer %q: want minmax, ema, percentile or mse", name)
}

func copyModel(m *model.Model) (*model.Model, error) {
	c, err := model.New(m.Config, 0)
	if err != nil {
		return nil, err
	}
	copy(c.Weights.Data, m.Weights.Data)
	return c, nil
}

func trainSteps(ctx context.Context, m *model.Model, data []byte, steps, batch int, lr float64, seed uint64, bar *report.Progress, from, span float64, what string) error {
	s, err := model.NewSampler(data, m.Config.SeqLen, seed)
	if err != nil {
		return err
	}
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: batch, Schedule: model.Schedule{Peak: lr, Warmup: min(100, steps/10), Total: steps, MinRatio: 0.1}, AdamW: model.DefaultAdamW(), ClipNorm: 1})
	if err != nil {
		return err
	}
	defer tr.Close()
	for i := 0; i < steps; i++ {
		st, err := tr.Step(ctx, s)
		if err != nil {
			return err
		}
		bar.Update(from+span*float64(i+1)/float64(steps), fmt.Sprintf("%s step %d/%d loss %.3f", what, i+1, steps, st.Loss))
	}
	return nil
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) (*result, error) {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	newObs, err := newObserver(o.observer)
	if err != nil {
		return nil, err
	}
	say := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	corpus, err := model.LoadCorpus(ctx, model.CorpusOptions{Root: o.corpusRoot})
	if err != nil {
		return nil, err
	}
	bar := report.NewProgress(stderr, "quantize")
	var m *model.Model
	batch := 8
	if o.checkpoint != "" {
		if m, err = model.Load(o.checkpoint); err != nil {
			return nil, err
		}
		o.preset = "checkpoint"
	} else {
		p, err := model.LookupPreset(o.preset)
		if err != nil {
			return nil, err
		}
		batch = p.Batch
		if m, err = model.New(p.Config, o.seed); err != nil {
			return nil, err
		}
		if o.steps <= 0 {
			return nil, errors.New("give -checkpoint or -steps > 0")
		}
		if err := trainSteps(ctx, m, corpus.Train, o.steps, batch, 3e-3, o.seed, bar, 0, 0.4, "pretrain"); err != nil {
			return nil, err
		}
	}
	T := m.Config.SeqLen
	say("model: %d parameters, d_model %d, %d layers, T %d", m.NumParams(), m.Config.DModel, m.Config.Layers, T)
	valIn, valTg, err := model.ValidationWindows(corpus.Val, o.evalWindows, T, 1)
	if err != nil {
		return nil, err
	}
	calIn, _, err := model.ValidationWindows(corpus.Train, o.calibWindows, T, 2)
	if err != nil {
		return nil, err
	}
	res := &result{Preset: o.preset, Params: m.NumParams(), QATSteps: o.qatSteps}
	var fp32BPB float64
	eval := func(name string, mm *model.Model) error {
		bpb, err := mm.Evaluate(valIn, valTg, T, 8)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if name == "fp32" {
			fp32BPB = bpb
		}
		res.Rows = append(res.Rows, row{Name: name, BPB: bpb, RelDiff: bpb/fp32BPB - 1})
		return nil
	}
	stage := 0.4
	if o.checkpoint != "" {
		stage = 0
	}
	step := func(status string) {
		stage += 0.07
		bar.Update(min(stage, 0.99), status)
	}

	step("fp32 evaluation")
	if err := eval("fp32", m); err != nil {
		return nil, err
	}
	fp32Path := filepath.Join(o.out, "fp32.safetensors")
	if err := m.Save(fp32Path); err != nil {
		return nil, err
	}
	step("W8")
	w8, err := quant.Quantize(m, quant.Config{Act: quant.ActFloat})
	if err != nil {
		return nil, err
	}
	if err := eval("W8", w8.Model); err != nil {
		return nil, err
	}
	step("W8A8")
	noOutliers := quant.DefaultConfig()
	noOutliers.Threshold, noOutliers.Embeddings = 0, true
	w8a8, err := quant.Quantize(m, noOutliers)
	if err != nil {
		return nil, err
	}
	if err := eval("W8A8 (per-token)", w8a8.Model); err != nil {
		return nil, err
	}
	step("W8A8+outliers")
	outliers := quant.DefaultConfig()
	outliers.Threshold, outliers.Embeddings = float32(o.threshold), true
	w8a8o, err := quant.Quantize(m, outliers)
	if err != nil {
		return nil, err
	}
	if err := eval(fmt.Sprintf("W8A8+outliers (|x|≥%g)", o.threshold), w8a8o.Model); err != nil {
		return nil, err
	}
	step("W8A8+outliers + int8 head")
	head := outliers
	head.Head = true
	w8a8h, err := quant.Quantize(m, head)
	if err != nil {
		return nil, err
	}
	if err := eval(fmt.Sprintf("W8A8+outliers (|x|≥%g) + int8 head", o.threshold), w8a8h.Model); err != nil {
		return nil, err
	}
	step("calibration")
	scales, err := quant.Calibrate(m, calIn, T, 8, nil, newObs)
	if err != nil {
		return nil, err
	}
	static, err := quant.Quantize(m, quant.Config{Act: quant.ActStatic, Threshold: 0, ActScales: scales, Embeddings: true})
	if err != nil {
		return nil, err
	}
	if err := eval("W8A8 static ("+o.observer+")", static.Model); err != nil {
		return nil, err
	}
	int8Path := filepath.Join(o.out, "int8.safetensors")
	if err := w8a8o.Save(int8Path); err != nil {
		return nil, err
	}
	if _, err := quant.Load(int8Path); err != nil {
		return nil, err
	}
	res.Int8Checkpoint = int8Path
	if o.qatSteps > 0 {
		qm, err := copyModel(m)
		if err != nil {
			return nil, err
		}
		// The same fine-tuning in float32, so that the QAT row compares
		// with a model trained as long.
		fm, err := copyModel(m)
		if err != nil {
			return nil, err
		}
		if err := fm.SetTrainable(fm.Weights); err != nil {
			return nil, err
		}
		if err := trainSteps(ctx, fm, corpus.Train, o.qatSteps, batch, o.qatLR, o.seed+1, bar, stage, 0.1, "fp32 fine-tune"); err != nil {
			return nil, err
		}
		stage += 0.1
		if err := eval(fmt.Sprintf("fp32 fine-tuned %d steps (QAT's reference)", o.qatSteps), fm); err != nil {
			return nil, err
		}
		q, err := quant.InsertFakeQuant(qm, quant.QATOptions{LSQ: o.lsq, ActScales: scales})
		if err != nil {
			return nil, err
		}
		if err := trainSteps(ctx, qm, corpus.Train, o.qatSteps, batch, o.qatLR, o.seed+1, bar, stage, 0.1, "QAT"); err != nil {
			return nil, err
		}
		stage += 0.1
		q.Freeze()
		qi, err := q.Convert(true)
		if err != nil {
			return nil, err
		}
		name := "W8A8 static after QAT"
		if o.lsq {
			name += " (LSQ)"
		}
		if err := eval(name, qi.Model); err != nil {
			return nil, err
		}
	}
	step("generation")
	gen := func(mm *model.Model, tokens int) (float64, string, error) {
		prompt := model.Encode("func main() {\n")
		start := time.Now()
		out, err := mm.Generate(ctx, prompt, tokens, model.SampleOptions{Temperature: 0.8, TopK: 40, Seed: o.seed})
		if err != nil {
			return 0, "", err
		}
		return float64(len(out)) / time.Since(start).Seconds(), model.Decode(out), nil
	}
	// A warm-up of each model, then alternating timed runs (the order
	// flipping each time) so that neither gets a warmer or quieter machine;
	// the medians are reported.
	reps := max(o.genReps, 1)
	res.GenReps = reps
	for _, mm := range []*model.Model{m, w8a8.Model} {
		if _, _, err := gen(mm, min(o.genTokens, 32)); err != nil {
			return nil, err
		}
	}
	for r := 0; r < reps; r++ {
		order := []bool{false, true} // int8?
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, int8 := range order {
			if !int8 {
				v, _, err := gen(m, o.genTokens)
				if err != nil {
					return nil, err
				}
				res.GenFP32Runs = append(res.GenFP32Runs, v)
				continue
			}
			v, sample, err := gen(w8a8.Model, o.genTokens)
			if err != nil {
				return nil, err
			}
			res.GenInt8Runs = append(res.GenInt8Runs, v)
			res.Int8GenerateOut = sample
		}
		bar.Update(min(stage+0.05*float64(r+1)/float64(reps), 0.99), fmt.Sprintf("generation %d/%d", r+1, reps))
	}
	res.GenFP32TokPerS, res.GenInt8TokPerS = median(res.GenFP32Runs), median(res.GenInt8Runs)
	bar.Finish("done")

	a, err := os.Stat(fp32Path)
	if err != nil {
		return nil, err
	}
	b, err := os.Stat(int8Path)
	if err != nil {
		return nil, err
	}
	res.FP32Bytes, res.Int8Bytes = a.Size(), b.Size()
	res.BytesRatio = float64(b.Size()) / float64(a.Size())

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "checkpoint bytes\tfp32 %d\tint8 %d\t(%.3f×)\n", res.FP32Bytes, res.Int8Bytes, res.BytesRatio)
	fmt.Fprintf(tw, "generation tokens/s (median of %d)\tfp32 %.0f\tint8 %.0f\t(%.2f×)\n", res.GenReps, res.GenFP32TokPerS, res.GenInt8TokPerS, res.GenInt8TokPerS/res.GenFP32TokPerS)
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "model\tvalidation bits/byte\tvs fp32\t")
	for _, r := range res.Rows {
		fmt.Fprintf(tw, "%s\t%.4f\t%+.2f%%\t\n", r.Name, r.BPB, 100*r.RelDiff)
	}
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "--- int8 sample ---\n%s\n-------------------\n", res.Int8GenerateOut)
	return res, nil
}

// median returns the median of xs (the mean of the middle two for an even
// count), 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}
