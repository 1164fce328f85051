// Command pretrain trains a GPT preset on the Go standard library's source
// (the corpus rules of the PyTorch anchor, so results compare), showing a
// progress bar, evaluating validation bits per byte as it goes, and writing
// a training checkpoint, a loss-curve PNG and a sample of generated Go.
//
//	go run ./examples/pretrain -preset tiny -minutes 5
//	go run ./examples/pretrain -steps 4000
//	go run ./examples/pretrain -resume out/pretrain/checkpoint.safetensors -steps 6000
//
// The run's length is either -steps or -minutes, not both. -steps N is the
// step to train until, counted from the start of the run: a fresh run
// takes N steps, a run resumed at step K takes N−K more (N must exceed K).
// -minutes M is a wall-clock budget for this invocation. A resumed run given
// neither finishes the run it resumes: it trains until the saved schedule's
// last step (or, when the checkpoint has none, for -minutes' default).
//
// The learning-rate schedule is saved in the checkpoint, and a resumed run
// uses the saved one, so N steps run as K + resume + N−K use the rates of
// N uninterrupted steps. Flags given explicitly (-lr, -warmup, -decay)
// override the saved values; a -steps target other than the saved total
// moves the cosine's end to the new target (it is the run's length); under
// -minutes the cosine's end is estimated from the measured speed after 50
// steps, as in a fresh run. The batch size is not saved: resume with the
// same -batch (its default is the model's preset batch).
//
// -precision bf16 trains in mixed precision (model.PrecisionBF16): the
// linear layers' products take bfloat16 operands with float32 accumulation,
// while the master weights, optimizer, norms, attention, head and loss stay
// float32. The checkpoint holds float32 state only, so a run may resume in
// either precision.
//
// Stopping early: Ctrl-C, a non-finite loss or gradient, or any other error
// mid-run leaves the weights of the last completed step untouched (a failed
// step changes nothing). The checkpoint of that step, with the data
// sampler's state from before the failed step so that a resume repeats it
// exactly, and the loss curve so far are saved before the command exits
// with the error. If any weight or optimizer moment is not finite, the
// checkpoint is not written, so an earlier file at that path is kept. A
// run that stopped on a non-finite loss diverges again on resume unless
// -lr is lowered.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
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
	precision   string
	prec        model.Precision // -precision, parsed by validate

	set    map[string]bool       // the flags given on the command line
	onStep func(model.StepStats) // called after each step (tests interrupt runs with it)
}

// result is printed as one JSON line under -json. Steps and tokens are
// told apart for resumed runs: steps_total is the checkpoint's step count,
// steps_start where this run began, steps_this_run and tokens_this_run what
// this invocation did.
type result struct {
	Preset        string         `json:"preset"`       // the preset whose model was trained, or "custom"
	Model         model.Config   `json:"model"`        // the configuration actually trained
	Params        int            `json:"params"`       // its parameter count
	Batch         int            `json:"batch"`        // sequences per step
	ResumedFrom   string         `json:"resumed_from"` // the checkpoint resumed, "" for a fresh run
	StepsStart    int            `json:"steps_start"`  // the step this run started from
	StepsThisRun  int            `json:"steps_this_run"`
	StepsTotal    int            `json:"steps_total"`
	TokensThisRun int            `json:"tokens_this_run"`
	Seconds       float64        `json:"seconds"`      // this run's training time
	TokensPerSec  float64        `json:"tokens_per_s"` // this run's throughput
	Schedule      model.Schedule `json:"schedule"`     // the learning-rate schedule, as saved in the checkpoint
	TrainLoss     float64        `json:"train_loss_nats"`
	ValBPB        float64        `json:"val_bits_per_byte"`
	Checkpoint    string         `json:"checkpoint"`
	Plot          string         `json:"plot"`
	Sample        string         `json:"sample"`
}

func main() {
	var o options
	flag.StringVar(&o.preset, "preset", "tiny", "model preset: tiny, small or medium (a resumed run trains the checkpoint's model)")
	flag.IntVar(&o.steps, "steps", 0, "train until this step (a resumed run continues to it); exclusive with -minutes")
	flag.Float64Var(&o.minutes, "minutes", 3, "wall-clock training budget of this run, when -steps is not given")
	flag.IntVar(&o.batch, "batch", 0, "sequences per step (0: the preset's)")
	flag.Float64Var(&o.lr, "lr", 3e-3, "peak learning rate (on resume: overrides the saved schedule's)")
	flag.IntVar(&o.warmup, "warmup", 100, "linear warmup steps (on resume: overrides the saved schedule's)")
	flag.StringVar(&o.decay, "decay", "cosine", "after warmup: cosine (to 10% of -lr at the last step) or none (constant, as the PyTorch anchor)")
	flag.StringVar(&o.out, "out", "out/pretrain", "output directory")
	flag.Uint64Var(&o.seed, "seed", 1, "seed for initialization, data order and the sample (the data order of a resumed run is restored)")
	flag.StringVar(&o.resume, "resume", "", "training checkpoint to resume from")
	flag.IntVar(&o.evalEvery, "eval-every", 250, "evaluate validation bits/byte every N steps (0: only at the end)")
	flag.IntVar(&o.evalWindows, "eval-windows", 64, "validation windows per evaluation")
	flag.StringVar(&o.attention, "attention", "flash", "attention kernel: flash or naive (a resumed run keeps the checkpoint's unless given)")
	flag.IntVar(&o.sampleLen, "sample", 300, "bytes of Go to generate at the end (0: none)")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as one JSON object on the last line")
	flag.StringVar(&o.corpusRoot, "corpus", "", "source root to train on (default: $(go env GOROOT)/src)")
	flag.StringVar(&o.precision, "precision", "fp32", "matrix products of the linear layers: fp32, or bf16 (bfloat16 operands, float32 accumulation and master weights)")
	flag.Parse()
	o.set = map[string]bool{}
	flag.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pretrain: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}

	report.Main("pretrain", o.jsonOut, func(ctx context.Context, stdout, stderr io.Writer) (*result, error) {
		return run(ctx, o, stdout, stderr)
	})
}

// validate checks the flags before anything slow happens and records the
// parsed -precision in o.prec.
func (o *options) validate() error {
	switch {
	case o.steps < 0 || (o.set["steps"] && o.steps == 0):
		return fmt.Errorf("-steps %d: want a positive step count", o.steps)
	case !(o.minutes >= 0) || math.IsInf(o.minutes, 0):
		return fmt.Errorf("-minutes %v: want a positive budget", o.minutes)
	case o.set["steps"] && o.set["minutes"]:
		return errors.New("give -steps or -minutes, not both")
	case o.steps == 0 && o.minutes == 0 && o.resume == "":
		return errors.New("give -steps N or -minutes M")
	case o.batch < 0:
		return fmt.Errorf("-batch %d: want a positive batch (0: the preset's)", o.batch)
	case !(o.lr > 0) || math.IsInf(o.lr, 0):
		return fmt.Errorf("-lr %v: want a positive, finite learning rate", o.lr)
	case o.warmup < 0:
		return fmt.Errorf("-warmup %d: want 0 or more steps", o.warmup)
	case o.decay != model.DecayCosine && o.decay != model.DecayNone:
		return fmt.Errorf("-decay %q: want %s or %s", o.decay, model.DecayCosine, model.DecayNone)
	case o.evalEvery < 0:
		return fmt.Errorf("-eval-every %d: want 0 (only at the end) or a positive interval", o.evalEvery)
	case o.evalWindows <= 0:
		return fmt.Errorf("-eval-windows %d: want at least one window", o.evalWindows)
	case o.sampleLen < 0:
		return fmt.Errorf("-sample %d: want 0 or more bytes", o.sampleLen)
	case o.attention != string(model.AttentionFlash) && o.attention != string(model.AttentionNaive):
		return fmt.Errorf("-attention %q: want %s or %s", o.attention, model.AttentionFlash, model.AttentionNaive)
	case o.out == "":
		return errors.New("-out: want an output directory")
	}
	prec, err := model.ParsePrecision(o.precision)
	if err != nil {
		return fmt.Errorf("-precision %q: want fp32 or bf16", o.precision)
	}
	o.prec = prec
	if _, err := model.LookupPreset(o.preset); err != nil {
		return fmt.Errorf("-preset: %w", err)
	}
	return nil
}

// runPlan is how long a run trains and with which learning rates.
type runPlan struct {
	target   int            // train until this step; 0: for budget
	budget   time.Duration  // wall-clock budget when target is 0
	fixTotal bool           // a cosine under a budget: fix its end from the speed after 50 steps
	schedule model.Schedule // the rates (saved in the checkpoint)
	notes    []string       // what was decided, for the log
}

// plan decides the run's length and schedule from the flags and, for a
// resumed run, the checkpoint (see the package documentation).
func plan(o options, ck *model.Checkpoint) (runPlan, error) {
	var p runPlan
	fromFlags := model.Schedule{Peak: o.lr, Warmup: o.warmup, MinRatio: 0.1, Decay: o.decay}
	start := 0
	if ck == nil {
		p.schedule = fromFlags
	} else {
		start = ck.Step
		if ck.Schedule != nil {
			p.schedule = *ck.Schedule
			if o.set["lr"] {
				p.schedule.Peak = o.lr
			}
			if o.set["warmup"] {
				p.schedule.Warmup = o.warmup
			}
			if o.set["decay"] {
				p.schedule.Decay = o.decay
			}
			if p.schedule.Decay == "" {
				p.schedule.Decay = model.DecayCosine
			}
		} else {
			p.schedule = fromFlags
			p.notes = append(p.notes, "the checkpoint has no saved schedule (an older file): using -lr, -warmup and -decay")
		}
	}
	switch {
	case o.steps > 0:
		if o.steps <= start {
			return p, fmt.Errorf("-steps %d is the step to train until, and the checkpoint is already at step %d", o.steps, start)
		}
		p.target = o.steps
	case o.set["minutes"] || ck == nil || ck.Schedule == nil || ck.Schedule.Total <= start:
		if o.minutes <= 0 {
			return p, errors.New("give -steps N or -minutes M: the checkpoint's schedule has no steps left to finish")
		}
		p.budget = time.Duration(o.minutes * float64(time.Minute))
	default:
		p.target = ck.Schedule.Total
		p.notes = append(p.notes, fmt.Sprintf("finishing the saved run: training until step %d", p.target))
	}
	if p.target > 0 {
		if ck != nil && ck.Schedule != nil && p.schedule.Total != p.target {
			p.notes = append(p.notes, fmt.Sprintf("the schedule's last step moves from %d to %d", p.schedule.Total, p.target))
		}
		p.schedule.Total = p.target
	} else if p.schedule.Decay == model.DecayCosine {
		p.fixTotal = true
	}
	if err := p.schedule.Validate(); err != nil {
		return p, err
	}
	return p, nil
}

// presetOf names the preset whose model cfg is (whatever its attention
// kernel), or returns "custom".
func presetOf(cfg model.Config) string {
	for _, name := range model.PresetNames() {
		p, _ := model.LookupPreset(name)
		p.Config.Attention = cfg.Attention
		if p.Config == cfg {
			return name
		}
	}
	return "custom"
}

// allFinite reports whether every value is finite.
func allFinite(xs ...[]float32) bool {
	for _, x := range xs {
		for _, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return false
			}
		}
	}
	return true
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) (*result, error) {
	if o.set == nil {
		o.set = map[string]bool{}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	say := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }

	var (
		m   *model.Model
		ck  *model.Checkpoint
		err error
	)
	preset, _ := model.LookupPreset(o.preset)
	cfg := preset.Config
	cfg.Attention = model.AttentionImpl(o.attention)
	if o.resume != "" {
		if ck, err = model.LoadCheckpoint(o.resume); err != nil {
			return nil, err
		}
		m = ck.Model
		if o.set["attention"] {
			m.Config.Attention = cfg.Attention
		}
		cfg = m.Config
		name := presetOf(cfg)
		if o.set["preset"] && name != o.preset {
			return nil, fmt.Errorf("-preset %s, but the checkpoint holds a %s model: leave -preset out to resume it", o.preset, name)
		}
		o.preset = name
		if p, err := model.LookupPreset(name); err == nil {
			preset = p
		}
		if o.set["seed"] {
			say("-seed: a resumed run restores its data order and dropout seed from the checkpoint; the seed only draws the sample")
		}
	}
	p, err := plan(o, ck)
	if err != nil {
		return nil, err
	}
	for _, n := range p.notes {
		say("%s", n)
	}
	if o.batch == 0 {
		o.batch = preset.Batch
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}

	corpus, err := model.LoadCorpus(ctx, model.CorpusOptions{Root: o.corpusRoot})
	if err != nil {
		return nil, err
	}
	say("corpus: %d training and %d validation bytes from %s", len(corpus.Train), len(corpus.Val), corpus.Root)

	if m == nil {
		if m, err = model.New(cfg, o.seed); err != nil {
			return nil, err
		}
	}
	data, err := model.NewSampler(corpus.Train, cfg.SeqLen, o.seed)
	if err != nil {
		return nil, err
	}
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: o.batch, Schedule: p.schedule, AdamW: model.DefaultAdamW(), ClipNorm: 1, Precision: o.prec})
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
	say("model: %s, %d parameters, %s attention, batch %d×%d", o.preset, m.NumParams(), cfg.Attention, o.batch, cfg.SeqLen)
	if p.target > 0 {
		say("schedule: peak %g, warmup %d, %s decay, until step %d", p.schedule.Peak, p.schedule.Warmup, p.schedule.Decay, p.target)
	} else {
		say("schedule: peak %g, warmup %d, %s decay, for %v", p.schedule.Peak, p.schedule.Warmup, p.schedule.Decay, p.budget)
	}

	var (
		trainX, trainY, valX, valY []float64
		emaLoss                    float64
		tokens                     int
		lastStats                  model.StepStats
		stopErr                    error
		state                      []byte // the sampler's state that pairs with the weights
	)
	ckpt := filepath.Join(o.out, "checkpoint.safetensors")
	plotPath := filepath.Join(o.out, "loss.png")
	savePlot := func() error {
		return report.Plot{
			Title: fmt.Sprintf("galleon %s on the Go corpus", o.preset), XLabel: "step", YLabel: "bits per byte",
			Series: []report.Series{{Name: "training (EMA)", X: trainX, Y: trainY}, {Name: "validation", X: valX, Y: valY}},
		}.SavePNG(plotPath)
	}

	bar := report.NewProgress(stderr, "pretrain")
	start := time.Now()
	first := tr.StepsDone()
	for {
		done := tr.StepsDone() - first
		elapsed := time.Since(start)
		var frac float64
		if p.target > 0 {
			if tr.StepsDone() >= p.target {
				break
			}
			frac = float64(done) / float64(p.target-first)
		} else {
			if elapsed >= p.budget {
				break
			}
			frac = elapsed.Seconds() / p.budget.Seconds()
			if p.fixTotal && done == 50 {
				// Fix the cosine's length from the measured speed.
				p.schedule.Total = first + int(float64(done)/elapsed.Seconds()*p.budget.Seconds())
				tr.SetSchedule(p.schedule)
			}
		}
		state = data.State()
		st, err := tr.Step(ctx, data)
		if err != nil {
			stopErr = err
			break
		}
		lastStats = st
		tokens += st.Tokens
		if emaLoss == 0 {
			emaLoss = st.Loss
		}
		emaLoss = 0.95*emaLoss + 0.05*st.Loss
		trainX = append(trainX, float64(st.Step))
		trainY = append(trainY, model.BitsPerByte(emaLoss))
		if o.evalEvery > 0 && st.Step%o.evalEvery == 0 {
			bpb, err := evaluate()
			if err != nil {
				state = data.State() // the step completed
				stopErr = err
				break
			}
			valX, valY = append(valX, float64(st.Step)), append(valY, bpb)
		}
		tps := float64(tokens) / time.Since(start).Seconds()
		status := fmt.Sprintf("step %d loss %.3f lr %.2g %.1fk tok/s", st.Step, emaLoss, st.LR, tps/1000)
		if len(valY) > 0 {
			status += fmt.Sprintf(" val %.3f bpb", valY[len(valY)-1])
		}
		bar.Update(frac, status)
		if o.onStep != nil {
			o.onStep(st)
		}
	}
	seconds := time.Since(start).Seconds()

	if stopErr != nil {
		bar.Finish(fmt.Sprintf("stopped after step %d", tr.StepsDone()))
		return nil, stopEarly(stopErr, tr, state, ckpt, savePlot, plotPath, say)
	}
	bar.Finish(fmt.Sprintf("%d steps in %.0fs", tr.StepsDone()-first, seconds))

	bpb, err := evaluate()
	if err != nil {
		return nil, err
	}
	if len(valX) == 0 || valX[len(valX)-1] != float64(tr.StepsDone()) {
		valX, valY = append(valX, float64(tr.StepsDone())), append(valY, bpb)
	}
	if err := tr.Save(ckpt, data.State()); err != nil {
		return nil, err
	}
	if err := savePlot(); err != nil {
		return nil, err
	}
	prompt := "func "
	sample := prompt
	if o.sampleLen > 0 {
		gen, err := m.Generate(ctx, model.Encode(prompt), o.sampleLen, model.SampleOptions{Temperature: 0.8, TopK: 40, Seed: o.seed})
		if err != nil {
			return nil, err
		}
		sample += model.Decode(gen)
	}

	fmt.Fprintf(stdout, "steps %d (%d this run), %d tokens in %.1fs (%.0f tokens/s)\n", tr.StepsDone(), tr.StepsDone()-first, tokens, seconds, float64(tokens)/seconds)
	fmt.Fprintf(stdout, "validation: %.3f bits/byte\n", bpb)
	fmt.Fprintf(stdout, "checkpoint: %s\nloss curve: %s\n", ckpt, plotPath)
	fmt.Fprintf(stdout, "--- sample ---\n%s\n--------------\n", sample)
	return &result{
		Preset: o.preset, Model: m.Config, Params: m.NumParams(), Batch: o.batch, ResumedFrom: o.resume,
		StepsStart: first, StepsThisRun: tr.StepsDone() - first, StepsTotal: tr.StepsDone(), TokensThisRun: tokens,
		Seconds: seconds, TokensPerSec: float64(tokens) / seconds, Schedule: tr.Config().Schedule,
		TrainLoss: lastStats.Loss, ValBPB: bpb, Checkpoint: ckpt, Plot: plotPath, Sample: sample,
	}, nil
}

// stopEarly saves what a run stopped by err (Ctrl-C, a non-finite value, a
// failed evaluation) has done: the checkpoint of the last completed step,
// with the sampler state that pairs with it, unless a weight or optimizer
// moment is not finite; and the loss curve. It returns err, annotated with
// what was saved.
func stopEarly(err error, tr *model.Trainer, state []byte, ckpt string, savePlot func() error, plotPath string, say func(string, ...any)) error {
	why := "stopped"
	if errors.Is(err, context.Canceled) {
		why = "interrupted"
	}
	var saved []string
	if !allFinite(tr.Model.Weights.Data, tr.Opt.M, tr.Opt.V) {
		say("%s after step %d: the weights or optimizer state are not finite, so %s is not written (an earlier file there is kept)", why, tr.StepsDone(), ckpt)
	} else if serr := tr.Save(ckpt, state); serr != nil {
		say("%s after step %d: saving the checkpoint failed: %v", why, tr.StepsDone(), serr)
	} else {
		saved = append(saved, "checkpoint "+ckpt)
		say("%s after step %d: checkpoint saved to %s (resume with -resume %s)", why, tr.StepsDone(), ckpt, ckpt)
	}
	if perr := savePlot(); perr != nil {
		say("saving the loss curve failed: %v", perr)
	} else {
		saved = append(saved, "loss curve "+plotPath)
	}
	if errors.Is(err, model.ErrNonFinite) {
		say("a resumed run repeats the failing step: lower -lr to get past it")
	}
	if len(saved) == 0 {
		return fmt.Errorf("%s after step %d, nothing saved: %w", why, tr.StepsDone(), err)
	}
	return fmt.Errorf("%s after step %d, saved %s: %w", why, tr.StepsDone(), strings.Join(saved, " and "), err)
}
