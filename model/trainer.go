package model

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// Batcher fills one micro-batch of input and target token ids (B·T each,
// targets being the inputs shifted by one token).
type Batcher interface {
	NextBatch(inputs, targets []int32) error // fills both slices, of equal length
}

// TrainConfig holds the hyperparameters of a training run.
type TrainConfig struct {
	Batch    int         // sequences per micro-batch
	SeqLen   int         // tokens per sequence; 0 means the model's SeqLen
	Accum    int         // micro-batches per optimizer step (gradient accumulation); 0 means 1
	Schedule Schedule    // learning rate per step
	AdamW    AdamWConfig // optimizer hyperparameters
	ClipNorm float64     // global gradient-norm clipping; 0 disables

	// GradCheckpointing recomputes each block's activations in the
	// backward pass instead of keeping them from the forward pass (see
	// ReplicaOptions): less memory, about one more forward pass of time,
	// the same weights.
	GradCheckpointing bool

	// Precision is the number format of the linear layers' products:
	// PrecisionFP32 (the default) or PrecisionBF16, mixed precision with
	// float32 master weights (see Precision).
	Precision Precision
}

// CountTargets returns the number of targets that carry loss: those that
// are not the ignore index (−1).
func CountTargets(targets []int32) int {
	n := 0
	for _, t := range targets {
		if t != -1 {
			n++
		}
	}
	return n
}

// TargetWeight is the weight of a part of a step (a micro-batch, a
// worker's rows of one) holding n of the step's total counted targets:
// ForwardBackward with it adds the part's share of the gradient of the
// step's mean loss. It is n/total in float32, computed as a float32
// division, so that a part of unpadded data (n = rows·T) gets the bits of
// rows/(Batch·Accum).
func TargetWeight(n, total int) float32 {
	return float32(n) / float32(total)
}

// StepStats reports one optimizer step.
type StepStats struct {
	Step     int     // 1-based number of the step just taken
	Loss     float64 // mean training loss over the step's targets (all micro-batches), nats
	GradNorm float64 // global gradient norm before clipping
	LR       float64 // learning rate used
	Tokens   int     // tokens processed by the step
}

// Trainer trains a model on one replica: the single-process training loop
// whose pieces the parallel package distributes.
type Trainer struct {
	Model   *Model   // trained in place
	Replica *Replica // computes the gradients
	Opt     *AdamW   // updates the trainable set
	cfg     TrainConfig

	inputs, targets []int32
	closed          bool
}

// NewTrainer builds a replica and an optimizer over the model's trainable
// parameters.
func NewTrainer(m *Model, cfg TrainConfig) (*Trainer, error) {
	if cfg.SeqLen == 0 {
		cfg.SeqLen = m.Config.SeqLen
	}
	if cfg.Accum == 0 {
		cfg.Accum = 1
	}
	if cfg.Batch <= 0 || cfg.Accum < 0 {
		return nil, fmt.Errorf("model: train config: batch %d, accumulation %d", cfg.Batch, cfg.Accum)
	}
	if err := cfg.Schedule.Validate(); err != nil {
		return nil, fmt.Errorf("model: train config: %w", err)
	}
	// NaN would silently disable clipping (no comparison with it holds).
	if !(cfg.ClipNorm >= 0) || math.IsInf(cfg.ClipNorm, 0) {
		return nil, fmt.Errorf("model: train config: clip norm %v (want finite, >= 0; 0 disables)", cfg.ClipNorm)
	}
	r, err := m.NewReplicaWith(cfg.Batch, cfg.SeqLen, ReplicaOptions{GradCheckpointing: cfg.GradCheckpointing, Precision: cfg.Precision})
	if err != nil {
		return nil, err
	}
	opt, err := NewAdamW(m.Trainable(), cfg.AdamW)
	if err != nil {
		r.Close()
		return nil, err
	}
	n := cfg.Accum * cfg.Batch * cfg.SeqLen
	return &Trainer{Model: m, Replica: r, Opt: opt, cfg: cfg, inputs: make([]int32, n), targets: make([]int32, n)}, nil
}

// Config returns the run's hyperparameters.
func (t *Trainer) Config() TrainConfig { return t.cfg }

// StepsDone returns the number of optimizer steps taken.
func (t *Trainer) StepsDone() int { return t.Opt.T }

// Step takes one optimizer step: Accum micro-batches forward and backward,
// global-norm clipping, then AdamW at the scheduled learning rate. The
// step's loss, and the gradient, are the mean over every target of the step
// that is not the ignore index (−1), whichever micro-batch holds it: each
// micro-batch's mean is weighted by its share of the step's targets (as
// transformers' Trainer normalizes by num_items_in_batch), so padding does
// not change what the step trains, and parallel.Trainer with any number of
// workers computes the same mean. A non-finite loss or gradient, or a step
// whose targets are all ignored, stops the step before any weight changes,
// with an error naming the step.
func (t *Trainer) Step(ctx context.Context, data Batcher) (StepStats, error) {
	step := t.Opt.T + 1
	fail := func(err error) (StepStats, error) {
		return StepStats{Step: step}, fmt.Errorf("model: step %d: %w", step, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if data == nil {
		return fail(errors.New("nil data"))
	}
	if t.closed {
		return fail(errors.New("trainer is closed"))
	}

	// Every micro-batch first: the weights need the step's target count.
	per := t.cfg.Batch * t.cfg.SeqLen
	for k := range t.cfg.Accum {
		if err := data.NextBatch(t.inputs[k*per:(k+1)*per], t.targets[k*per:(k+1)*per]); err != nil {
			return fail(err)
		}
	}
	total := CountTargets(t.targets)
	if total == 0 {
		return fail(fmt.Errorf("all %d targets are the ignore index -1: %w", len(t.targets), ErrNoTargets))
	}
	r := t.Replica
	r.ZeroGrad()
	var loss float64
	for k := range t.cfg.Accum {
		in, tg := t.inputs[k*per:(k+1)*per], t.targets[k*per:(k+1)*per]
		n := CountTargets(tg)
		r.Dropout.Step = uint64(step)*uint64(t.cfg.Accum) + uint64(k)
		l, err := r.ForwardBackward(in, tg, TargetWeight(n, total))
		if err != nil {
			return fail(err)
		}
		loss += float64(l) * float64(n) / float64(total)
	}

	norm, err := GradNorm(r.Grad)
	if err != nil {
		return fail(err)
	}
	// Clipping scales the gradients inside the optimizer's pass.
	lr := t.cfg.Schedule.LR(step - 1)
	if err := t.Opt.StepScaled(r.Grad, ClipScale(norm, t.cfg.ClipNorm), lr); err != nil {
		return fail(err)
	}
	return StepStats{Step: step, Loss: loss, GradNorm: norm, LR: lr, Tokens: len(t.inputs)}, nil
}

// Train takes steps optimizer steps, calling progress (when not nil) after
// each; it stops at the first error, or when ctx is cancelled (between
// steps).
func (t *Trainer) Train(ctx context.Context, data Batcher, steps int, progress func(StepStats)) error {
	return RunSteps(ctx, t.Step, data, steps, progress)
}

// RunSteps is the loop of Train over any trainer's step function (the
// parallel package's trainer runs the same loop).
func RunSteps(ctx context.Context, step func(context.Context, Batcher) (StepStats, error), data Batcher, steps int, progress func(StepStats)) error {
	for range steps {
		st, err := step(ctx, data)
		if err != nil {
			return err
		}
		if progress != nil {
			progress(st)
		}
	}
	return nil
}

// Close releases the trainer's replica; Step fails after it.
func (t *Trainer) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	return t.Replica.Close()
}

// SetSchedule replaces the learning-rate schedule, e.g. to fix the length
// of a cosine decay once a wall-clock budget's step count is known.
func (t *Trainer) SetSchedule(s Schedule) { t.cfg.Schedule = s }
