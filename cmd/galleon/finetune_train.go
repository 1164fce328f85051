package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/galleon-ml/galleon/data"
	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/parallel"
)

// ftResult is finetune's -json object.
type ftResult struct {
	AdapterDir      string   `json:"adapter_dir,omitempty"`
	ModelDir        string   `json:"model_dir,omitempty"`
	LossPlot        string   `json:"loss_plot"`
	Steps           int      `json:"steps"`
	Epochs          float64  `json:"epochs"`
	TrainLoss       float64  `json:"train_loss"`
	ValLoss         *float64 `json:"val_loss"` // null without validation data
	TokensPerSecond float64  `json:"tokens_per_second"`
	ProcessedTokens int      `json:"processed_tokens"` // token positions this run's steps processed, as tokens_per_second counts them
	DataTargets     int      `json:"data_targets"`     // positions with a loss in all training windows: one epoch
	PeakRSSBytes    int64    `json:"peak_rss_bytes"`
	AdapterBytes    int64    `json:"adapter_bytes,omitempty"`
	ModelBytes      int64    `json:"model_bytes,omitempty"`
	BaseBytes       int64    `json:"base_bytes"`
	TrainableParams int      `json:"trainable_params"`
	TrainWindows    int      `json:"train_windows"`
	ValWindows      int      `json:"val_windows"`
	Packed          bool     `json:"packed"`
	GradCkpt        bool     `json:"grad_checkpointing"`
	Precision       string   `json:"precision"`       // fp32 or bf16: the linear layers' product operands
	BaseDType       string   `json:"base_dtype"`      // float32 or bf16: how the base's weights are held
	BF16Params      int      `json:"bf16_params"`     // base weights held in bfloat16
	Workers         int      `json:"workers"`         // goroutine workers (1 under -mpi)
	Ranks           int      `json:"ranks,omitempty"` // MPI ranks under -mpi
	ResumedFrom     int      `json:"resumed_from_step,omitempty"`
}

// stepper is what the loop needs of a trainer: model.Trainer (one worker)
// and parallel.Trainer (several) both are one.
type stepper interface {
	Step(ctx context.Context, data model.Batcher) (model.StepStats, error)
	Close() error
}

// loaderBatcher feeds a data.Loader's batches to a trainer.
type loaderBatcher struct{ l *data.Loader }

// NextBatch implements model.Batcher.
func (b loaderBatcher) NextBatch(inputs, targets []int32) error {
	_, err := b.l.Next(inputs, targets)
	return err
}

// history is the run's loss curve, kept in checkpoints so that a resumed
// run's plot and log cover the whole run.
type history struct {
	Train    []float64 `json:"train"` // per step
	ValSteps []int     `json:"val_steps"`
	Val      []float64 `json:"val"`
}

// ftRun is one fine-tuning run being set up or trained.
type ftRun struct {
	o       *ftOptions
	m       *model.Model
	lm      *lora.Model // nil with -full
	d       *ftData
	T       int
	total   int // optimizer steps of the whole run
	sched   model.Schedule
	adamw   model.AdamWConfig
	loader  *data.Loader
	tr      stepper
	single  *model.Trainer // tr when it has one worker (else tr is a parallel.Trainer)
	hist    history
	start   int                      // steps done before this process (resume)
	pending *parallel.OptimizerState // a checkpoint's optimizer state, until the trainer exists
	baseLen int64
	hf      bool // the model is a Hugging Face directory, not a galleon checkpoint file
	rank    int  // this process's MPI rank (0 without -mpi); only rank 0 writes
	ranks   int  // MPI ranks under -mpi, else 0
}

func runFinetune(ctx context.Context, o *ftOptions, stdout, stderr io.Writer, afterStep func(int)) (err error) {
	r := &ftRun{o: o}
	if err := r.setup(ctx, stderr); err != nil {
		return err
	}
	// Setting up leaves garbage behind (the tokenizer's parse, the
	// tokenized text, the graphs built to check the model) whose pages the
	// runtime keeps for reuse, interleaved with the weights; the steps'
	// buffers do not fit them and grow the heap beside them. Returned to
	// the system now, they no longer count: at SmolLM2-135M's shapes, LoRA
	// on all linear layers, -batch 1 -seq 256 -grad-checkpointing, the
	// peak RSS was 723 → 699 MB over a float32 base and 445 → 432 MB over
	// a bf16 one (medians of 3).
	debug.FreeOSMemory()
	defer func() {
		if cerr := r.tr.Close(); err == nil {
			err = cerr
		}
	}()
	return r.train(ctx, stdout, stderr, afterStep)
}

// setup loads the model and data, installs the adapter and builds the
// trainer, restoring a checkpoint under -resume.
func (r *ftRun) setup(ctx context.Context, stderr io.Writer) error {
	o := r.o
	// A float32 checkpoint loads as before whatever -base-dtype says
	// (auto keeps only what is stored as BF16); -full and -int8 never
	// keep bfloat16 weights.
	dt := dtypeFloat32
	if !o.Full && !o.Int8 && o.Precision != "fp32" {
		dt = o.BaseDType
	}
	l, err := loadBase(ctx, baseFlags{Model: o.Model, Int8: o.Int8, DType: dt, Cmd: "finetune"})
	if err != nil {
		return err
	}
	m := l.Model
	r.m, r.hf = m, l.HF
	if err := o.resolvePrecision(l.DType); err != nil {
		return err
	}
	if r.baseLen, err = weightFilesBytes(o.Model); err != nil {
		return err
	}
	if o.Seq > m.Config.SeqLen {
		return usageError{fmt.Sprintf("finetune: -seq %d exceeds the model's context of %d", o.Seq, m.Config.SeqLen)}
	}
	r.T = o.Seq
	if r.d, err = loadData(o, l, r.T); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	steps := o.Steps
	if steps == 0 {
		steps = int(math.Ceil(o.Epochs * float64(len(r.d.Train)) / float64(o.Batch*o.Accum)))
	}
	r.total = max(steps, 1)
	warmup := o.Warmup
	if warmup == -1 {
		warmup = r.total / 20
	}
	r.sched = model.Schedule{Peak: o.peakLR(), Warmup: warmup, Total: r.total, MinRatio: 0.1}
	r.adamw = model.DefaultAdamW()
	if !o.Full {
		// Adapters start near zero and are few: decay would only pull
		// them back (PEFT's usual setting has none).
		r.adamw.WeightDecay = 0
		if r.lm, err = lora.Apply(m, o.loraConfig()); err != nil {
			return usageError{fmt.Sprintf("finetune: -target: %v", err)}
		}
	}
	if r.loader, err = data.NewLoader(r.d.Train, o.Batch, o.Seed); err != nil {
		return err
	}
	if o.Resume != "" {
		if err := r.restore(o.Resume); err != nil {
			return err
		}
	}
	return r.newTrainer()
}

// newTrainer builds the trainer: model's for one worker, parallel's
// goroutine workers otherwise. A restored optimizer state is moved in.
func (r *ftRun) newTrainer() error {
	o := r.o
	if o.Workers == 1 && !o.MPI {
		prec, err := model.ParsePrecision(o.Precision)
		if err != nil {
			return err
		}
		t, err := model.NewTrainer(r.m, model.TrainConfig{Batch: o.Batch, SeqLen: r.T, Accum: o.Accum, Schedule: r.sched, AdamW: r.adamw, ClipNorm: 1,
			GradCheckpointing: o.GradCkpt, Precision: prec})
		if err != nil {
			return err
		}
		r.tr, r.single = t, t
		return r.applyRestoredOptimizer()
	}
	cfg := parallel.Config{Workers: o.Workers, Batch: o.Batch, SeqLen: r.T, Accum: o.Accum, Schedule: r.sched, AdamW: r.adamw, ClipNorm: 1, GradCheckpointing: o.GradCkpt}
	if o.MPI {
		t, rank, ranks, err := newMPITrainer(r.m, cfg)
		if err != nil {
			return err
		}
		r.tr, r.rank, r.ranks = t, rank, ranks
		return r.applyRestoredOptimizer()
	}
	t, err := parallel.New(r.m, cfg)
	if err != nil {
		return err
	}
	r.tr = t
	return r.applyRestoredOptimizer()
}

// train runs the remaining steps; on cancellation it saves a checkpoint.
func (r *ftRun) train(ctx context.Context, stdout, stderr io.Writer, afterStep func(int)) error {
	o := r.o
	var logf io.Writer = io.Discard
	if r.rank == 0 {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return fmt.Errorf("finetune: %w", err)
		}
		f, err := os.OpenFile(filepath.Join(o.Out, "train.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("finetune: %w", err)
		}
		defer f.Close()
		logf = f
	} else {
		// Every rank trains the same run; rank 0 reports and writes it.
		stdout, stderr = io.Discard, nil
	}
	trainable := r.m.Trainable().Len()
	method := "full fine-tuning"
	if r.lm != nil {
		method = fmt.Sprintf("LoRA r=%d alpha=%g on %d layers", o.LoRAR, o.LoRAAlpha, len(r.lm.Active().Modules))
		if !o.Int8 {
			method += fmt.Sprintf(" over a %s base", o.BaseDType)
		}
	}
	method += fmt.Sprintf(", %s products", o.Precision)
	fmt.Fprintf(stdout, "%s: %s, %d trainable of %d weights; %d training windows of %d tokens (%s, %d trained targets), %d validation; %d steps of %d×%d sequences\n",
		o.Model, method, trainable, r.m.NumParams()+r.m.BF16Params(), len(r.d.Train), r.T, map[bool]string{true: "packed", false: "padded"}[r.d.Packed],
		r.d.Tokens, len(r.d.Val), r.total, o.Batch, o.Accum)
	fmt.Fprintf(logf, "run: %s\n", strings.Join(os.Args, " "))

	evalEvery := o.EvalEvery
	if evalEvery == 0 {
		evalEvery = max(1, r.total/10)
	}
	var bar *report.Progress
	if !o.JSON && stderr != nil {
		bar = report.NewProgress(stderr, "finetune")
	} else {
		bar = report.NewProgress(nil, "finetune")
	}
	var (
		ema          = report.EMA{Decay: 0.9}
		steadyTokens int
		steadyTime   time.Duration
		runTokens    int
		lastVal      = math.NaN()
	)
	if n := len(r.hist.Val); n > 0 {
		lastVal = r.hist.Val[n-1]
	}
	for _, l := range r.hist.Train {
		ema.Add(l)
	}
	batcher := loaderBatcher{r.loader}
	if o.CPUProf != "" {
		stop, err := startCPUProfile(o.CPUProf)
		if err != nil {
			return err
		}
		defer stop()
	}
	for step := r.start + 1; step <= r.total; step++ {
		// Under MPI the step itself stops every rank alike on a
		// cancelled context; stopping here could leave the others
		// waiting in it.
		if ctx.Err() != nil && !o.MPI {
			bar.Finish("interrupted")
			return r.interrupt(ctx, stdout, step-1, nil)
		}
		t0 := time.Now()
		// Under MPI a signal stops the run between steps: a step
		// cancelled midway would abort the job (MPI_Abort) before rank 0
		// saved anything. Cancelled before it, the step stops every rank
		// alike at its first exchange, and changes no weight.
		sctx := ctx
		if o.MPI && ctx.Err() == nil {
			sctx = context.WithoutCancel(ctx)
		}
		// A step stopped midway may have drawn its batches: the
		// checkpoint takes the data's position from before it.
		pos := r.loader.State()
		st, err := r.tr.Step(sctx, batcher)
		if err != nil {
			// Another rank's interrupt stops this one with ErrPeer.
			stopped := ctx.Err() != nil || (o.MPI && errors.Is(err, parallel.ErrPeer))
			if stopped && (r.single == nil || r.single.StepsDone() == step-1) {
				// Stopped before the step changed anything (a failed
				// parallel step leaves the weights as they were).
				bar.Finish("interrupted")
				if err := r.loader.SetState(pos); err != nil {
					return err
				}
				return r.interrupt(ctx, stdout, step-1, err)
			}
			return err
		}
		dt := time.Since(t0)
		runTokens += st.Tokens
		if step > r.start+1 || r.total == r.start+1 {
			steadyTokens += st.Tokens
			steadyTime += dt
		}
		r.hist.Train = append(r.hist.Train, st.Loss)
		ema.Add(st.Loss)
		if len(r.d.Val) > 0 && (step%evalEvery == 0 || step == r.total) {
			// Not cancelled midway: an interrupt then checkpoints after
			// this step with its validation loss, as the run would have.
			v, err := r.validate(context.WithoutCancel(ctx))
			if err != nil {
				return err
			}
			lastVal = v
			r.hist.ValSteps = append(r.hist.ValSteps, step)
			r.hist.Val = append(r.hist.Val, v)
		}
		tps := float64(st.Tokens) / dt.Seconds()
		if steadyTime > 0 {
			tps = float64(steadyTokens) / steadyTime.Seconds()
		}
		rss, _, _ := report.ResidentSet()
		status := fmt.Sprintf("step %d/%d loss %.4f", step, r.total, ema.Value())
		if !math.IsNaN(lastVal) {
			status += fmt.Sprintf(" val %.4f", lastVal)
		}
		status += fmt.Sprintf(" | %.0f tok/s | RSS %s", tps, mib(rss))
		bar.Update(float64(step)/float64(r.total), status)
		fmt.Fprintf(logf, "step %d/%d loss %.6f lr %.3g grad_norm %.4g", step, r.total, st.Loss, st.LR, st.GradNorm)
		if len(r.hist.ValSteps) > 0 && r.hist.ValSteps[len(r.hist.ValSteps)-1] == step {
			fmt.Fprintf(logf, " val_loss %.6f", lastVal)
		}
		fmt.Fprintf(logf, " tokens/s %.1f rss %d\n", float64(st.Tokens)/dt.Seconds(), rss)
		if afterStep != nil {
			afterStep(step)
		}
	}
	bar.Finish(fmt.Sprintf("%d steps, loss %.4f", r.total, ema.Value()))
	if o.MemProf != "" {
		if err := writeHeapProfile(o.MemProf); err != nil {
			return err
		}
	}
	res, err := r.finish()
	if err != nil {
		return err
	}
	res.ProcessedTokens = runTokens
	if steadyTime > 0 {
		res.TokensPerSecond = float64(steadyTokens) / steadyTime.Seconds()
	}
	if r.start > 0 {
		res.ResumedFrom = r.start
	}
	out := res.AdapterDir
	if out == "" {
		out = res.ModelDir
	}
	fmt.Fprintf(stdout, "trained %d steps: loss %.4f", res.Steps, res.TrainLoss)
	if res.ValLoss != nil {
		fmt.Fprintf(stdout, ", validation loss %.4f", *res.ValLoss)
	}
	fmt.Fprintf(stdout, ", %.0f tokens/s, peak RSS %s; wrote %s and %s\n", res.TokensPerSecond, mib(res.PeakRSSBytes), out, res.LossPlot)
	if o.JSON {
		return report.PrintJSON(stdout, res)
	}
	return nil
}

// validate returns the validation loss: the mean over every target that
// carries loss (eval's evaluate, which weights batches by those counts).
func (r *ftRun) validate(ctx context.Context) (float64, error) {
	res, err := evaluate(ctx, r.m, r.d.Val, r.T, r.o.Batch)
	if err != nil {
		return 0, fmt.Errorf("finetune: validation: %w", err)
	}
	return res.Loss, nil
}

// finish writes the adapter (or model), the loss plot and removes the
// checkpoint, which the finished run no longer needs.
func (r *ftRun) finish() (ftResult, error) {
	o := r.o
	res := ftResult{Steps: r.total, BaseBytes: r.baseLen, TrainableParams: r.m.Trainable().Len(),
		TrainWindows: len(r.d.Train), ValWindows: len(r.d.Val), Packed: r.d.Packed, GradCkpt: o.GradCkpt, Workers: o.Workers, Ranks: r.ranks,
		Precision: o.Precision, BaseDType: o.BaseDType, BF16Params: r.m.BF16Params(),
		Epochs: float64(r.total*o.Batch*o.Accum) / float64(len(r.d.Train))}
	res.DataTargets = r.d.Tokens
	if r.rank != 0 {
		return res, nil
	}
	if err := r.saveOutputs(); err != nil {
		return res, err
	}
	if r.lm != nil {
		res.AdapterDir = filepath.Join(o.Out, "adapter")
		_, res.AdapterBytes = dirBytes(res.AdapterDir)
	} else {
		res.ModelDir = r.modelPath()
		n, err := weightFilesBytes(res.ModelDir)
		if err != nil {
			return res, err
		}
		res.ModelBytes = n
	}
	res.LossPlot = filepath.Join(o.Out, "loss.png")
	// The final loss averages the last tenth of the run (at least one
	// step, at most 10): one step's loss is one batch's.
	tail := r.hist.Train[len(r.hist.Train)-min(max(1, len(r.hist.Train)/10), 10):]
	for _, l := range tail {
		res.TrainLoss += l / float64(len(tail))
	}
	if n := len(r.hist.Val); n > 0 {
		v := r.hist.Val[n-1]
		res.ValLoss = &v
	}
	_, peak, _ := report.ResidentSet()
	res.PeakRSSBytes = peak
	if err := os.Remove(filepath.Join(o.Out, checkpointFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("finetune: %w", err)
	}
	return res, nil
}

// saveOutputs writes what the run has trained so far: the adapter (or the
// model with -full) and the loss plot.
func (r *ftRun) saveOutputs() error {
	o := r.o
	if r.lm != nil {
		if err := r.lm.Active().Save(filepath.Join(o.Out, "adapter")); err != nil {
			return err
		}
	} else if err := r.saveModel(); err != nil {
		return err
	}
	return r.plot().SavePNG(filepath.Join(o.Out, "loss.png"))
}

// modelPath is where -full writes the model: an HF directory for an HF
// base (in its dtype), a galleon checkpoint file for a checkpoint base.
func (r *ftRun) modelPath() string {
	if r.hf {
		return filepath.Join(r.o.Out, "model")
	}
	return filepath.Join(r.o.Out, "model.safetensors")
}

func (r *ftRun) saveModel() error {
	if r.hf {
		return r.m.SavePretrained(r.modelPath())
	}
	return r.m.Save(r.modelPath())
}

// plot is the loss curve: training loss per step, validation loss where
// it was measured.
func (r *ftRun) plot() report.Plot {
	train := report.Series{Name: "train"}
	for i, l := range r.hist.Train {
		train.X = append(train.X, float64(i+1))
		train.Y = append(train.Y, l)
	}
	val := report.Series{Name: "validation"}
	for i, s := range r.hist.ValSteps {
		val.X = append(val.X, float64(s))
		val.Y = append(val.Y, r.hist.Val[i])
	}
	return report.Plot{Title: "galleon finetune " + filepath.Base(r.o.Model), XLabel: "step", YLabel: "loss (nats/token)", Series: []report.Series{train, val}}
}

// interrupt saves a resumable checkpoint (and the outputs so far) after
// step steps and reports how to continue. cause is why the run stopped:
// the step's error (nil when it stopped between steps), else ctx's.
func (r *ftRun) interrupt(ctx context.Context, stdout io.Writer, step int, cause error) error {
	if cause == nil || ctx.Err() != nil {
		cause = context.Cause(ctx)
	}
	if r.rank != 0 {
		return fmt.Errorf("finetune: rank %d interrupted after step %d: %w", r.rank, step, cause)
	}
	if err := r.saveCheckpoint(step); err != nil {
		return err
	}
	if err := r.saveOutputs(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "interrupted after step %d of %d: checkpoint saved in %s; continue with: galleon finetune -resume %s\n", step, r.total, r.o.Out, r.o.Out)
	return fmt.Errorf("finetune: interrupted after step %d of %d (checkpoint in %s): %w", step, r.total, r.o.Out, cause)
}

// startCPUProfile profiles the process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("finetune: -cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("finetune: -cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// writeHeapProfile writes the live heap, after a collection, to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("finetune: -memprofile: %w", err)
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("finetune: -memprofile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("finetune: -memprofile: %w", err)
	}
	return nil
}

// weightFilesBytes is the size of a model directory's weight files
// (*.safetensors), the checkpoint a user downloads, or of a checkpoint
// file.
func weightFilesBytes(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("finetune: %w", err)
	}
	if !st.IsDir() {
		return st.Size(), nil
	}
	files, err := filepath.Glob(filepath.Join(path, "*.safetensors"))
	if err != nil {
		return 0, fmt.Errorf("finetune: %w", err)
	}
	var n int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return 0, fmt.Errorf("finetune: %w", err)
		}
		n += st.Size()
	}
	return n, nil
}

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
