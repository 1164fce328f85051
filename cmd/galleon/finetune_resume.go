package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/parallel"
)

// checkpointFile is the resumable checkpoint in -out: one safetensors file,
// written atomically, holding the trainable weights (the adapter, or every
// weight with -full) and AdamW's moments as tensors, and in its metadata the
// run's options and the state that continues it exactly: optimizer step,
// schedule, data loader position, loss history. Dropout masks are a
// function of the seed and the step number, so no RNG state is needed
// beyond the step.
const checkpointFile = "checkpoint.safetensors"

const (
	ckptFormat  = "galleon-finetune-checkpoint"
	ckptVersion = "1"
)

// Names of the checkpoint's tensors and metadata keys.
const (
	ckptParams  = "trainable"
	ckptM       = "adam_m"
	ckptV       = "adam_v"
	metaFormat  = "format"
	metaVersion = "version"
	metaOptions = "options"
	metaState   = "state"
)

// ckptParam is one trainable tensor's name and shape: the checkpoint's
// layout, compared with the resumed run's before anything is copied.
type ckptParam struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
}

// ckptState is the checkpoint's "state" metadata.
type ckptState struct {
	Step     int               `json:"step"`
	Total    int               `json:"total_steps"`
	Schedule model.Schedule    `json:"schedule"`
	AdamW    model.AdamWConfig `json:"adamw"`
	Loader   []byte            `json:"loader"`
	History  history           `json:"history"`
	Layout   []ckptParam       `json:"layout"`
	Windows  int               `json:"train_windows"`
	Tokens   int               `json:"trained_tokens"`
	// Workers is -workers of the interrupted run (1 under -mpi), which a
	// resumed run uses unless told otherwise; 0 in checkpoints from
	// before it was recorded, whose runs had one worker.
	Workers int `json:"workers,omitempty"`
}

// stateful is a data-parallel trainer's optimizer state, which checkpoints
// hold: parallel.Trainer, also inside -mpi's trainer.
type stateful interface {
	OptimizerState() (parallel.OptimizerState, error)
	SetOptimizerState(parallel.OptimizerState) error
}

// optimizerState returns the trainer's step count and AdamW moments, laid
// out as the trainable vector whatever the trainer. Under -mpi every rank
// holds them all (ZeRO stage 0), so rank 0 alone can save them.
func (r *ftRun) optimizerState() (parallel.OptimizerState, error) {
	if t := r.single; t != nil {
		return parallel.OptimizerState{Step: t.Opt.T, M: t.Opt.M, V: t.Opt.V}, nil
	}
	st, ok := r.tr.(stateful)
	if !ok {
		return parallel.OptimizerState{}, fmt.Errorf("finetune: checkpoint: a %T has no optimizer state", r.tr)
	}
	return st.OptimizerState()
}

// saveCheckpoint writes the state after step optimizer steps.
func (r *ftRun) saveCheckpoint(step int) error {
	opt, err := r.optimizerState()
	if err != nil {
		return err
	}
	if opt.Step != step {
		return fmt.Errorf("finetune: checkpoint: the optimizer took %d steps, the run %d", opt.Step, step)
	}
	opts, err := json.Marshal(r.o)
	if err != nil {
		return fmt.Errorf("finetune: checkpoint: %w", err)
	}
	ps := r.m.Trainable()
	st := ckptState{Step: step, Total: r.total, Schedule: r.sched, AdamW: r.adamw, Loader: r.loader.State(),
		History: r.hist, Windows: len(r.d.Train), Tokens: r.d.Tokens, Workers: r.o.Workers}
	for _, p := range ps.Params {
		st.Layout = append(st.Layout, ckptParam{Name: p.Name, Shape: p.Shape})
	}
	state, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("finetune: checkpoint: %w", err)
	}
	n := []int64{int64(ps.Len())}
	src := func(name string, xs []float32) safetensors.Source {
		return safetensors.Source{Name: name, DType: safetensors.F32, Shape: n, Data: func() ([]byte, error) {
			b := make([]byte, 4*len(xs))
			for i, x := range xs {
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
			}
			return b, nil
		}}
	}
	meta := map[string]string{metaFormat: ckptFormat, metaVersion: ckptVersion, metaOptions: string(opts), metaState: string(state)}
	path := filepath.Join(r.o.Out, checkpointFile)
	if err := safetensors.WriteFileStream(path, []safetensors.Source{src(ckptParams, ps.Data), src(ckptM, opt.M), src(ckptV, opt.V)}, meta); err != nil {
		return fmt.Errorf("finetune: checkpoint: %w", err)
	}
	return nil
}

// openCheckpoint opens dir's checkpoint and checks its format.
func openCheckpoint(dir string) (*safetensors.Reader, error) {
	path := filepath.Join(dir, checkpointFile)
	rd, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("finetune: -resume %s: %w", dir, err)
	}
	if rd.Metadata[metaFormat] != ckptFormat || rd.Metadata[metaVersion] != ckptVersion {
		rd.Close()
		return nil, fmt.Errorf("finetune: -resume %s: %s is not a version-%s finetune checkpoint", dir, path, ckptVersion)
	}
	return rd, nil
}

// readCheckpointOptions returns the options of the run a checkpoint
// interrupted, and its -workers (0 when the checkpoint predates them).
func readCheckpointOptions(dir string) (ftOptions, int, error) {
	rd, err := openCheckpoint(dir)
	if err != nil {
		return ftOptions{}, 0, err
	}
	defer rd.Close()
	var o ftOptions
	if err := json.Unmarshal([]byte(rd.Metadata[metaOptions]), &o); err != nil {
		return ftOptions{}, 0, fmt.Errorf("finetune: -resume %s: options: %w", dir, err)
	}
	var st ckptState
	if err := json.Unmarshal([]byte(rd.Metadata[metaState]), &st); err != nil {
		return ftOptions{}, 0, fmt.Errorf("finetune: -resume %s: state: %w", dir, err)
	}
	return o, st.Workers, nil
}

// restore loads dir's checkpoint into the run set up from the same
// options: trainable weights, loader position, schedule and history now,
// the optimizer state once the trainer is built (applyRestoredOptimizer).
func (r *ftRun) restore(dir string) error {
	rd, err := openCheckpoint(dir)
	if err != nil {
		return err
	}
	defer rd.Close()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("finetune: -resume %s: %s", dir, fmt.Sprintf(format, args...))
	}
	var st ckptState
	if err := json.Unmarshal([]byte(rd.Metadata[metaState]), &st); err != nil {
		return fail("state: %v", err)
	}
	ps := r.m.Trainable()
	var layout []ckptParam
	for _, p := range ps.Params {
		layout = append(layout, ckptParam{Name: p.Name, Shape: p.Shape})
	}
	same := len(layout) == len(st.Layout)
	for i := 0; same && i < len(layout); i++ {
		same = layout[i].Name == st.Layout[i].Name && slices.Equal(layout[i].Shape, st.Layout[i].Shape)
	}
	switch {
	case !same:
		return fail("the checkpoint's %d trainable tensors differ from this model's %d", len(st.Layout), len(layout))
	case st.Windows != len(r.d.Train) || st.Tokens != r.d.Tokens:
		return fail("the checkpoint was trained on %d windows with %d trained targets, the data now gives %d and %d: has %s changed?",
			st.Windows, st.Tokens, len(r.d.Train), r.d.Tokens, r.o.Data)
	case st.Total != r.total || st.Schedule != r.sched || st.AdamW != r.adamw:
		return fail("the checkpoint's schedule (%d steps, %+v, %+v) differs from the run's (%d, %+v, %+v)", st.Total, st.Schedule, st.AdamW, r.total, r.sched, r.adamw)
	case st.Step < 0 || st.Step > st.Total || len(st.History.Train) != st.Step || len(st.History.Val) != len(st.History.ValSteps):
		return fail("inconsistent state: step %d of %d with %d losses", st.Step, st.Total, len(st.History.Train))
	}
	read := func(name string) ([]float32, error) {
		info, ok := rd.Info(name)
		if !ok || info.DType != safetensors.F32 || len(info.Shape) != 1 || info.Shape[0] != int64(ps.Len()) {
			return nil, fail("tensor %s missing or not F32 [%d]", name, ps.Len())
		}
		xs, err := rd.Float32s(name)
		if err != nil {
			return nil, fail("%v", err)
		}
		return xs, nil
	}
	params, err := read(ckptParams)
	if err != nil {
		return err
	}
	var rs parallel.OptimizerState
	if rs.M, err = read(ckptM); err != nil {
		return err
	}
	if rs.V, err = read(ckptV); err != nil {
		return err
	}
	for i := range params {
		if math.IsNaN(float64(params[i])) || math.IsInf(float64(params[i]), 0) || !(rs.V[i] >= 0) || math.IsInf(float64(rs.V[i]), 0) {
			return fail("non-finite weight or moment at element %d", i)
		}
	}
	if err := r.loader.SetState(st.Loader); err != nil {
		return fail("%v", err)
	}
	copy(ps.Data, params)
	rs.Step = st.Step
	r.pending = &rs
	r.hist, r.start = st.History, st.Step
	return nil
}

// applyRestoredOptimizer moves a restored optimizer state into the trainer.
func (r *ftRun) applyRestoredOptimizer() error {
	if r.pending == nil {
		return nil
	}
	if r.single == nil {
		st, ok := r.tr.(stateful)
		if !ok {
			return fmt.Errorf("finetune: resume: a %T has no optimizer state", r.tr)
		}
		p := r.pending
		r.pending = nil
		if err := st.SetOptimizerState(*p); err != nil {
			return fmt.Errorf("finetune: resume: %w", err)
		}
		return nil
	}
	opt := r.single.Opt
	if len(opt.M) != len(r.pending.M) {
		return errors.New("finetune: resume: optimizer state does not fit the trainer")
	}
	copy(opt.M, r.pending.M)
	copy(opt.V, r.pending.V)
	opt.T = r.pending.Step
	r.pending = nil
	return nil
}
