package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
)

// ftOptions are finetune's settings. A resumable checkpoint stores them
// (JSON), so that -resume continues the run it interrupted with the same
// data, model and hyperparameters.
type ftOptions struct {
	Model       string   `json:"model"`
	Data        string   `json:"data"`
	Steps       int      `json:"steps"`  // 0: from Epochs
	Epochs      float64  `json:"epochs"` // used when Steps is 0
	Batch       int      `json:"batch"`
	Seq         int      `json:"seq"`
	Accum       int      `json:"accum"`
	LR          float64  `json:"lr"`     // 0: the method's default
	Warmup      int      `json:"warmup"` // -1: 5% of the steps
	LoRAR       int      `json:"lora_r"`
	LoRAAlpha   float64  `json:"lora_alpha"`
	LoRADropout float64  `json:"lora_dropout"`
	Targets     []string `json:"target"`
	Full        bool     `json:"full"`
	Int8        bool     `json:"int8"`
	GradCkpt    bool     `json:"grad_checkpointing"`
	// Precision is -precision, fp32 or bf16; "" until the base is loaded
	// (then bf16 for a base kept in bfloat16, else fp32). A checkpoint
	// stores the resolved value; one from before the flag has "", fp32.
	Precision string `json:"precision"`
	// BaseDType is -base-dtype, auto, float32 or bf16; the checkpoint
	// stores the resolved float32 or bf16 ("": float32, as before the
	// flag).
	BaseDType   string  `json:"base_dtype"`
	Val         string  `json:"val"`
	ValFraction float64 `json:"val_fraction"` // -1: 10% when there are at least 10 windows
	EvalEvery   int     `json:"eval_every"`   // 0: about ten times per run
	Seed        uint64  `json:"seed"`

	// Not part of the run's identity: where it writes and how it runs.
	Out     string `json:"-"`
	Resume  string `json:"-"`
	Workers int    `json:"-"`
	MPI     bool   `json:"-"`
	JSON    bool   `json:"-"`
	CPUProf string `json:"-"`
	MemProf string `json:"-"`
}

// Default learning rates: PEFT's usual LoRA rate, and a rate that full
// fine-tuning of a pretrained model tolerates.
const (
	defaultLoRALR = 2e-4
	defaultFullLR = 2e-5
)

// finetuneFlags defines finetune's flags on fs and returns the options they
// fill; targets is the raw -target value.
func finetuneFlags(fs *flag.FlagSet) (o *ftOptions, targets *string) {
	o = &ftOptions{}
	fs.StringVar(&o.Model, "model", "", "Hugging Face model `dir` (config.json, *.safetensors, tokenizer.json) or galleon checkpoint file (required)")
	fs.StringVar(&o.Data, "data", "", "training `file`: .txt, or .jsonl of {\"text\"}, {\"prompt\",\"completion\"} or {\"messages\"} lines (required)")
	fs.StringVar(&o.Out, "out", "finetuned", "output `dir`: adapter (or model with -full), loss.png, train.log, checkpoint")
	fs.IntVar(&o.Steps, "steps", 0, "optimizer steps; 0 means -epochs")
	fs.Float64Var(&o.Epochs, "epochs", 1, "passes over the training data when -steps is 0")
	fs.IntVar(&o.Batch, "batch", 4, "sequences per micro-batch")
	fs.IntVar(&o.Seq, "seq", 256, "tokens per sequence (window length)")
	fs.IntVar(&o.Accum, "accum", 1, "micro-batches per optimizer step (gradient accumulation)")
	fs.Float64Var(&o.LR, "lr", 0, fmt.Sprintf("peak learning rate; 0 means %g for LoRA, %g with -full", defaultLoRALR, defaultFullLR))
	fs.IntVar(&o.Warmup, "warmup", -1, "linear warmup steps; -1 means 5% of the steps")
	fs.IntVar(&o.LoRAR, "lora-r", 8, "LoRA rank")
	fs.Float64Var(&o.LoRAAlpha, "lora-alpha", 32, "LoRA alpha (the update is scaled by alpha/r)")
	fs.Float64Var(&o.LoRADropout, "lora-dropout", 0.1, "dropout on the LoRA input during training")
	targets = fs.String("target", "q_proj,v_proj", "comma-separated `modules` LoRA adapts (name suffixes such as q_proj), or all-linear")
	fs.BoolVar(&o.Full, "full", false, "full fine-tuning: train every weight and write an HF model directory instead of an adapter")
	fs.BoolVar(&o.Int8, "int8", false, "LoRA on an int8 base (the float32 weights of the linear layers are not kept)")
	fs.StringVar(&o.Precision, "precision", "", "`format` of the operands of the linear layers' products, fp32 or bf16 (bfloat16 operands, float32 accumulation, float32 master weights and optimizer); "+
		"with LoRA it is the frozen base's products (a float32 base's weights rounded per product, a bf16 base's as held; the adapters' rank-r products stay float32); default bf16 when the base is held in bf16, else fp32")
	fs.StringVar(&o.BaseDType, "base-dtype", dtypeAuto, "`dtype` of LoRA's frozen base, auto, float32 or bf16: bf16 keeps a checkpoint's BF16 linear weights (and a Llama-family token embedding) in bfloat16, half their memory, "+
		"multiplied on bfloat16 operands; float32 widens them exactly; auto is bf16 for a BF16 checkpoint unless -precision fp32, float32 otherwise (and always with -full or -int8)")
	fs.BoolVar(&o.GradCkpt, "grad-checkpointing", false, "recompute each block's activations in the backward pass: activation memory of one block, about one more forward pass of time (on by default with -int8)")
	fs.IntVar(&o.Workers, "workers", 1, "data-parallel goroutine workers (the batch is split across them)")
	fs.StringVar(&o.Val, "val", "", "validation `file`, in the formats of -data")
	fs.Float64Var(&o.ValFraction, "val-fraction", -1, "fraction of the training windows held out for validation when -val is not given; -1 means 0.1 when there are at least 10 windows, else none")
	fs.IntVar(&o.EvalEvery, "eval-every", 0, "steps between validation losses; 0 means about ten per run")
	fs.StringVar(&o.Resume, "resume", "", "continue the interrupted run whose -out `dir` holds checkpoint.safetensors")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the adapter's initialization, dropout, data order and validation split")
	fs.StringVar(&o.CPUProf, "cpuprofile", "", "write a CPU profile of the training steps to `file` (go tool pprof)")
	fs.StringVar(&o.MemProf, "memprofile", "", "write a heap profile to `file` after the last step (go tool pprof): what the trained model, trainer and data hold")
	fs.BoolVar(&o.JSON, "json", false, "print the results as one JSON object on the last line")
	addMPIFlag(fs, &o.MPI)
	return o, targets
}

// finetuneCmd is the finetune subcommand.
func finetuneCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return finetune(ctx, args, stdout, stderr, nil)
}

// finetune parses args and runs; afterStep (tests) is called after every
// optimizer step with its 1-based number.
func finetune(ctx context.Context, args []string, stdout, stderr io.Writer, afterStep func(step int)) error {
	fs := flag.NewFlagSet("finetune", flag.ContinueOnError)
	o, targets := finetuneFlags(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.Targets = splitTargets(*targets)
	// An int8 base is chosen to save memory, and without recomputation the
	// activations dominate it (a TinyLlama-1.1B-shaped base at T=512: over
	// 5 GiB of activations against 1.4 GiB of int8 weights), so -int8
	// recomputes unless told otherwise, as PEFT's
	// prepare_model_for_kbit_training does by default.
	if o.Int8 && !set["grad-checkpointing"] {
		o.GradCkpt = true
	}
	if o.Resume != "" {
		stored, workers, err := readCheckpointOptions(o.Resume)
		if err != nil {
			return err
		}
		if err := mergeResumeOptions(o, stored, set); err != nil {
			return err
		}
		// The interrupted run's workers, for its exact bits; another
		// count (or -mpi) continues the same training to float32
		// rounding.
		if !set["workers"] && !o.MPI && workers > 0 {
			o.Workers = workers
		}
	}
	if err := o.validate(set); err != nil {
		return err
	}
	return runFinetune(ctx, o, stdout, stderr, afterStep)
}

// splitTargets splits a -target value at commas, dropping blanks.
func splitTargets(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// mergeResumeOptions replaces o's run settings by the checkpoint's, after
// checking that none given on the command line contradicts them: a
// resumed run is the interrupted run, continued.
func mergeResumeOptions(o *ftOptions, stored ftOptions, set map[string]bool) error {
	cur := *o
	// Checkpoints from before -precision and -base-dtype trained float32
	// products on a float32 base.
	if stored.Precision == "" {
		stored.Precision = "fp32"
	}
	if stored.BaseDType == "" {
		stored.BaseDType = dtypeFloat32
	}
	if d, ok := parseBaseDType(cur.BaseDType); ok {
		cur.BaseDType = d
	}
	if p, err := model.ParsePrecision(cur.Precision); err == nil {
		cur.Precision = p.String()
	}
	keep := func(name string, differs bool) error {
		if set[name] && differs {
			return usageError{fmt.Sprintf("finetune: -%s differs from the run in the -resume checkpoint; a resumed run keeps its settings", name)}
		}
		return nil
	}
	checks := []struct {
		name    string
		differs bool
	}{
		{"model", cur.Model != stored.Model}, {"data", cur.Data != stored.Data},
		{"steps", cur.Steps != stored.Steps}, {"epochs", cur.Epochs != stored.Epochs},
		{"batch", cur.Batch != stored.Batch}, {"seq", cur.Seq != stored.Seq}, {"accum", cur.Accum != stored.Accum},
		{"lr", cur.LR != stored.LR}, {"warmup", cur.Warmup != stored.Warmup},
		{"lora-r", cur.LoRAR != stored.LoRAR}, {"lora-alpha", cur.LoRAAlpha != stored.LoRAAlpha},
		{"lora-dropout", cur.LoRADropout != stored.LoRADropout},
		{"target", strings.Join(cur.Targets, ",") != strings.Join(stored.Targets, ",")},
		{"full", cur.Full != stored.Full}, {"int8", cur.Int8 != stored.Int8},
		{"grad-checkpointing", cur.GradCkpt != stored.GradCkpt},
		{"precision", cur.Precision != stored.Precision},
		// auto resolves as the interrupted run did: from the same model.
		{"base-dtype", cur.BaseDType != stored.BaseDType && cur.BaseDType != dtypeAuto},
		{"val", cur.Val != stored.Val}, {"val-fraction", cur.ValFraction != stored.ValFraction},
		{"eval-every", cur.EvalEvery != stored.EvalEvery}, {"seed", cur.Seed != stored.Seed},
	}
	for _, c := range checks {
		if err := keep(c.name, c.differs); err != nil {
			return err
		}
	}
	run := stored
	run.Out, run.Resume, run.Workers, run.MPI, run.JSON, run.CPUProf, run.MemProf = cur.Out, cur.Resume, cur.Workers, cur.MPI, cur.JSON, cur.CPUProf, cur.MemProf
	if !set["out"] {
		run.Out = cur.Resume
	}
	*o = run
	return nil
}

// validate checks the options; set names the flags given explicitly.
func (o *ftOptions) validate(set map[string]bool) error {
	bad := func(format string, args ...any) error {
		return usageError{"finetune: " + fmt.Sprintf(format, args...)}
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	switch {
	case o.Model == "":
		return bad("-model is required")
	case o.Data == "":
		return bad("-data is required")
	case o.Out == "":
		return bad("-out is empty")
	case set["steps"] && set["epochs"]:
		return bad("give -steps or -epochs, not both")
	case o.Steps < 0:
		return bad("-steps %d is negative", o.Steps)
	case o.Steps == 0 && !(o.Epochs > 0 && finite(o.Epochs)):
		return bad("-epochs %g must be positive", o.Epochs)
	case o.Batch < 1:
		return bad("-batch %d must be at least 1", o.Batch)
	case o.Seq < 2:
		return bad("-seq %d must be at least 2", o.Seq)
	case o.Accum < 1:
		return bad("-accum %d must be at least 1", o.Accum)
	case !(o.LR >= 0 && finite(o.LR)):
		return bad("-lr %g must be positive (0 for the default)", o.LR)
	case o.Warmup < -1:
		return bad("-warmup %d is negative", o.Warmup)
	case o.Workers < 1:
		return bad("-workers %d must be at least 1", o.Workers)
	case o.Workers > o.Batch:
		return bad("-workers %d exceeds -batch %d: each worker needs a sequence of every micro-batch", o.Workers, o.Batch)
	case o.EvalEvery < 0:
		return bad("-eval-every %d is negative", o.EvalEvery)
	case o.Val != "" && set["val-fraction"]:
		return bad("give -val or -val-fraction, not both")
	case o.ValFraction != -1 && !(o.ValFraction >= 0 && o.ValFraction < 1):
		return bad("-val-fraction %g outside [0, 1)", o.ValFraction)
	case o.Full && o.Int8:
		return bad("-full and -int8 exclude each other: an int8 base is frozen, train a LoRA adapter on it")
	case o.Full && (set["lora-r"] || set["lora-alpha"] || set["lora-dropout"] || set["target"]):
		return bad("-full trains every weight: the -lora-* and -target flags do not apply")
	case o.MPI && o.Workers > 1:
		return bad("-mpi runs one worker per rank: drop -workers")
	}
	if err := o.validatePrecision(); err != nil {
		return err
	}
	for _, p := range []struct{ flag, path string }{{"data", o.Data}, {"val", o.Val}} {
		if p.path == "" {
			continue
		}
		if ext := strings.ToLower(filepath.Ext(p.path)); ext != ".txt" && ext != ".jsonl" {
			return bad("-%s %s: want a .txt or .jsonl file", p.flag, p.path)
		}
	}
	if !o.Full {
		cfg := o.loraConfig()
		if len(cfg.TargetModules) == 0 {
			return bad("-target is empty")
		}
		if err := cfg.Validate(); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}

// validatePrecision checks and normalizes -precision and -base-dtype.
// What only the loaded model tells is checked after loading: loadBase
// refuses -base-dtype bf16 on a base with no BF16 weights, and
// resolvePrecision settles auto.
func (o *ftOptions) validatePrecision() error {
	bad := func(format string, args ...any) error {
		return usageError{"finetune: " + fmt.Sprintf(format, args...)}
	}
	if o.Precision != "" {
		p, err := model.ParsePrecision(o.Precision)
		if err != nil {
			return bad("-precision %q: want fp32 or bf16", o.Precision)
		}
		o.Precision = p.String()
	}
	d, ok := parseBaseDType(o.BaseDType)
	if !ok {
		return bad("-base-dtype %q: want auto, float32 or bf16", o.BaseDType)
	}
	o.BaseDType = d
	parallel := o.Workers > 1 || o.MPI
	switch {
	case d == dtypeBF16 && o.Full:
		return bad("-base-dtype bf16 holds a frozen base, and -full trains every weight (in float32 master weights): use -full -precision bf16 for mixed precision")
	case d == dtypeBF16 && o.Int8:
		return bad("-base-dtype bf16 and -int8 exclude each other: -int8 holds the base's linear weights in int8")
	case o.Int8 && o.Precision == "bf16":
		return bad("-precision bf16 does not apply to -int8, whose base multiplies in int8 (the adapters stay float32)")
	case d == dtypeBF16 && o.Precision == "fp32":
		return bad("-base-dtype bf16 multiplies on bfloat16 operands, -precision fp32 asks for float32 ones: drop one")
	case o.Precision == "bf16" && parallel && (o.Full || d == dtypeFloat32):
		return bad(bf16NeedsOneWorker)
	}
	return nil
}

// bf16NeedsOneWorker is refused twice: from the flags when the weights are
// known to be float32 (-full, -base-dtype float32), and once the base is
// loaded when auto found no BF16 weights.
const bf16NeedsOneWorker = "-precision bf16 on float32 weights needs one worker (no -workers, no -mpi): the data-parallel trainer multiplies in float32"

// resolvePrecision settles -base-dtype and -precision once the base is
// loaded: held is how it holds its weights (loaded.DType).
func (o *ftOptions) resolvePrecision(held string) error {
	// -base-dtype bf16 reached loadBase as asked (validatePrecision
	// refused what would not), which refuses a base with no BF16 weights.
	o.BaseDType = held
	if o.Precision == "" {
		o.Precision = "fp32"
		if held == dtypeBF16 {
			o.Precision = "bf16"
		}
	}
	if o.Precision == "bf16" && held == dtypeFloat32 && (o.Workers > 1 || o.MPI) {
		return usageError{"finetune: " + bf16NeedsOneWorker}
	}
	return nil
}

// loraConfig is the adapter configuration the options ask for.
func (o *ftOptions) loraConfig() lora.Config {
	return lora.Config{R: o.LoRAR, Alpha: o.LoRAAlpha, Dropout: o.LoRADropout, TargetModules: o.Targets, Seed: o.Seed, BaseModel: o.Model}
}

// peakLR is the learning rate the run uses.
func (o *ftOptions) peakLR() float64 {
	switch {
	case o.LR > 0:
		return o.LR
	case o.Full:
		return defaultFullLR
	}
	return defaultLoRALR
}
