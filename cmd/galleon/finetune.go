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
	Val         string   `json:"val"`
	ValFraction float64  `json:"val_fraction"` // -1: 10% when there are at least 10 windows
	EvalEvery   int      `json:"eval_every"`   // 0: about ten times per run
	Seed        uint64   `json:"seed"`

	// Not part of the run's identity: where it writes and how it runs.
	Out     string `json:"-"`
	Resume  string `json:"-"`
	Workers int    `json:"-"`
	MPI     bool   `json:"-"`
	JSON    bool   `json:"-"`
	CPUProf string `json:"-"`
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
	fs.BoolVar(&o.GradCkpt, "grad-checkpointing", false, "recompute each block's activations in the backward pass: activation memory of one block, about one more forward pass of time (on by default with -int8)")
	fs.IntVar(&o.Workers, "workers", 1, "data-parallel goroutine workers (the batch is split across them)")
	fs.StringVar(&o.Val, "val", "", "validation `file`, in the formats of -data")
	fs.Float64Var(&o.ValFraction, "val-fraction", -1, "fraction of the training windows held out for validation when -val is not given; -1 means 0.1 when there are at least 10 windows, else none")
	fs.IntVar(&o.EvalEvery, "eval-every", 0, "steps between validation losses; 0 means about ten per run")
	fs.StringVar(&o.Resume, "resume", "", "continue the interrupted run whose -out `dir` holds checkpoint.safetensors")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the adapter's initialization, dropout, data order and validation split")
	fs.StringVar(&o.CPUProf, "cpuprofile", "", "write a CPU profile of the training steps to `file` (go tool pprof)")
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
		stored, err := readCheckpointOptions(o.Resume)
		if err != nil {
			return err
		}
		if err := mergeResumeOptions(o, stored, set); err != nil {
			return err
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
		{"val", cur.Val != stored.Val}, {"val-fraction", cur.ValFraction != stored.ValFraction},
		{"eval-every", cur.EvalEvery != stored.EvalEvery}, {"seed", cur.Seed != stored.Seed},
	}
	for _, c := range checks {
		if err := keep(c.name, c.differs); err != nil {
			return err
		}
	}
	run := stored
	run.Out, run.Resume, run.Workers, run.MPI, run.JSON, run.CPUProf = cur.Out, cur.Resume, cur.Workers, cur.MPI, cur.JSON, cur.CPUProf
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
	case o.Resume != "" && (o.Workers > 1 || o.MPI):
		return bad("-resume needs one worker (no -workers, no -mpi): checkpoints hold one worker's optimizer state")
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
