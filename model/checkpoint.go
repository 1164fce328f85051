package model

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// ErrCheckpoint is wrapped by every error about a checkpoint's content.
var ErrCheckpoint = errors.New("model: bad checkpoint")

// Checkpoint metadata keys. Tensors carry the GPT-2 parameter names, so a
// weights file reads naturally in the Python ecosystem (Hugging Face
// GPT2LMHeadModel uses the same names and [in, out] Conv1D layouts).
const (
	metaFormat = "format"
	metaConfig = "config"
	metaStep   = "step"
	metaAdamW  = "adamw"
	metaData   = "data_state"
	metaDrop   = "dropout_seed"
	metaSched  = "schedule"

	formatName     = "galleon"
	optimMPrefix   = "optimizer.exp_avg."
	optimVPrefix   = "optimizer.exp_avg_sq."
	maxCheckpointB = 1 << 40 // refuse configs claiming more than 1 TiB of weights
)

// Checkpoint is the content of a checkpoint file: a model and, for a
// training checkpoint, the state that resumes training exactly.
type Checkpoint struct {
	Model *Model // configuration and weights

	// Training state; Step is 0 and M, V are nil for a weights-only file.
	Step  int
	AdamW AdamWConfig // the optimizer's hyperparameters
	M, V  []float32   // AdamW's first and second moments, laid out like the trainable set
	Data  []byte      // the data pipeline's state (sampler RNG), opaque here
	// Schedule is the learning-rate schedule the run was training with;
	// nil for weights-only files and for checkpoints written before
	// schedules were saved. Build the resumed trainer with it (overriding
	// only what the user asks to change) to continue the same run.
	Schedule *Schedule
}

// Save writes the model's configuration and weights to path atomically.
func (m *Model) Save(path string) error {
	return m.save(path, nil)
}

// Save writes a training checkpoint: weights, AdamW moments and step, and the
// data pipeline's state (as returned by the sampler) and the learning-rate
// schedule, so that loading it, building a trainer with the checkpoint's
// Schedule, and running N−K more steps gives the same weights as N
// uninterrupted steps.
func (t *Trainer) Save(path string, dataState []byte) error {
	if t.Model.trainable != t.Model.Weights {
		return fmt.Errorf("model: training checkpoints hold full training runs; save adapters with their own package")
	}
	sched := t.cfg.Schedule
	return t.Model.save(path, &Checkpoint{Step: t.Opt.T, AdamW: t.Opt.cfg, M: t.Opt.M, V: t.Opt.V, Data: dataState, Schedule: &sched})
}

func (m *Model) save(path string, train *Checkpoint) error {
	if have, want := len(m.Weights.Params), len(m.Config.paramSpecs()); have != want {
		// Load would reject the file for the missing tensors: refuse it
		// here, before anything is written.
		return fmt.Errorf("model: save %s: %d of the configuration's %d parameters are held (ReleaseReplaced freed the others); save an int8 model with quant.Model.Save", path, have, want)
	}
	cfg, err := json.Marshal(m.Config)
	if err != nil {
		return fmt.Errorf("model: save: %w", err)
	}
	meta := map[string]string{metaFormat: formatName, metaConfig: string(cfg), metaDrop: strconv.FormatUint(m.dropoutSeed, 10)}
	var tensors []safetensors.Tensor
	add := func(prefix string, data []float32) {
		for _, p := range m.Weights.Params {
			tensors = append(tensors, safetensors.F32Tensor(prefix+p.Name, shape64(p.Shape), data[p.Offset:p.Offset+p.Size()]))
		}
	}
	add("", m.Weights.Data)
	if train != nil {
		adam, err := json.Marshal(train.AdamW)
		if err != nil {
			return fmt.Errorf("model: save: %w", err)
		}
		meta[metaStep] = strconv.Itoa(train.Step)
		meta[metaAdamW] = string(adam)
		meta[metaData] = base64.StdEncoding.EncodeToString(train.Data)
		if train.Schedule != nil {
			sched, err := json.Marshal(train.Schedule)
			if err != nil {
				return fmt.Errorf("model: save: %w", err)
			}
			meta[metaSched] = string(sched)
		}
		add(optimMPrefix, train.M)
		add(optimVPrefix, train.V)
	}
	if err := safetensors.WriteFile(path, tensors, meta); err != nil {
		return fmt.Errorf("model: save %s: %w", path, err)
	}
	return nil
}

func shape64(s []int) []int64 {
	out := make([]int64, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}

// Load reads a checkpoint's model (weights-only or training checkpoint).
func Load(path string) (*Model, error) {
	ck, err := LoadCheckpoint(path)
	if err != nil {
		return nil, err
	}
	return ck.Model, nil
}

// LoadCheckpoint reads a checkpoint file. The file is treated as hostile:
// besides the structural checks of the safetensors reader, the configuration
// must validate, and every tensor must be expected, F32, of the expected
// shape, and present exactly once; sizes are checked against the file before
// anything is allocated.
func LoadCheckpoint(path string) (*Checkpoint, error) {
	// Open validates the header against the file's size (a padded,
	// truncated or overlapping file is refused here) without reading any
	// tensor data; the tensors are read only once the configuration
	// accounts for every byte of them.
	r, err := safetensors.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("model: load: %w", err)
		}
		return nil, fmt.Errorf("model: load %s: %w: %w", path, ErrCheckpoint, err)
	}
	defer r.Close()
	bad := func(format string, args ...any) (*Checkpoint, error) {
		return nil, fmt.Errorf("model: load %s: %w: "+format, append([]any{path, ErrCheckpoint}, args...)...)
	}
	if r.Metadata[metaFormat] != formatName {
		return bad("format %q, want %q", r.Metadata[metaFormat], formatName)
	}
	var cfg Config
	if err := json.Unmarshal([]byte(r.Metadata[metaConfig]), &cfg); err != nil {
		return bad("config: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		return bad("%v", err)
	}
	// Compare the bytes the config implies with the tensor bytes the file
	// actually holds before building anything from the config: a few
	// hundred bytes of header must not make the loader allocate.
	n, err := cfg.ParamCount()
	if err != nil {
		return bad("%v", err)
	}
	_, training := r.Metadata[metaStep]
	copies := int64(1)
	if training {
		copies = 3 // weights and the two AdamW moments
	}
	want, err := mulChecked(n, 4*copies)
	if err != nil || want > maxCheckpointB {
		return bad("config needs more than %d bytes of tensors", int64(maxCheckpointB))
	}
	if have := r.DataSize(); want != have {
		return bad("config needs %d bytes of tensors, the file holds %d", want, have)
	}
	f, err := r.ReadAll()
	if err != nil {
		return bad("%w", err)
	}
	m, err := newUninitialized(cfg)
	if err != nil {
		return bad("%v", err)
	}
	if d, ok := r.Metadata[metaDrop]; ok {
		if m.dropoutSeed, err = strconv.ParseUint(d, 10, 64); err != nil {
			return bad("dropout seed %q", d)
		}
	}
	ck := &Checkpoint{Model: m}
	targets := map[string][]float32{}
	expect := func(prefix string, dst []float32) {
		for _, p := range m.Weights.Params {
			targets[prefix+p.Name] = dst[p.Offset : p.Offset+p.Size()]
		}
	}
	expect("", m.Weights.Data)
	if training {
		step, err := strconv.Atoi(r.Metadata[metaStep])
		// Steps beyond 2^31 are no real run; MaxInt64 would overflow the
		// next step's number.
		if err != nil || step < 0 || step > math.MaxInt32 {
			return bad("step %q", r.Metadata[metaStep])
		}
		if err := json.Unmarshal([]byte(r.Metadata[metaAdamW]), &ck.AdamW); err != nil {
			return bad("adamw: %v", err)
		}
		if err := ck.AdamW.validate(); err != nil {
			return bad("%v", err)
		}
		if ck.Data, err = base64.StdEncoding.DecodeString(r.Metadata[metaData]); err != nil {
			return bad("data state: %v", err)
		}
		if js, ok := r.Metadata[metaSched]; ok {
			var sched Schedule
			if err := json.Unmarshal([]byte(js), &sched); err != nil {
				return bad("schedule: %v", err)
			}
			if err := sched.Validate(); err != nil {
				return bad("%v", err)
			}
			ck.Schedule = &sched
		}
		ck.Step = step
		ck.M = make([]float32, m.Weights.Len())
		ck.V = make([]float32, m.Weights.Len())
		expect(optimMPrefix, ck.M)
		expect(optimVPrefix, ck.V)
	}
	shapes := map[string][]int{}
	for _, p := range m.Weights.Params {
		shapes[p.Name] = p.Shape
		shapes[optimMPrefix+p.Name] = p.Shape
		shapes[optimVPrefix+p.Name] = p.Shape
	}
	for _, t := range f.Tensors {
		dst, ok := targets[t.Name]
		if !ok {
			return bad("unexpected tensor %q", t.Name)
		}
		if t.DType != safetensors.F32 {
			return bad("tensor %q is %v, want F32", t.Name, t.DType)
		}
		if !sameShape(t.Shape, shapes[t.Name]) {
			return bad("tensor %q has shape %v, want %v", t.Name, t.Shape, shapes[t.Name])
		}
		vals, err := t.Float32s()
		if err != nil || len(vals) != len(dst) {
			return bad("tensor %q: %v", t.Name, err)
		}
		// Values as well as shapes: a NaN or Inf weight makes every later
		// Logits and Generate garbage without an error, and a negative
		// second moment makes the resumed run write NaN weights.
		for i, v := range vals {
			f := float64(v)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return bad("tensor %q: element %d is %v", t.Name, i, v)
			}
			if v < 0 && strings.HasPrefix(t.Name, optimVPrefix) {
				return bad("tensor %q: element %d is %v, a second moment must be >= 0", t.Name, i, v)
			}
		}
		copy(dst, vals)
		delete(targets, t.Name)
	}
	for name := range targets {
		return bad("missing tensor %q", name)
	}
	return ck, nil
}

func sameShape(a []int64, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != int64(b[i]) {
			return false
		}
	}
	return true
}

// Restore loads a training checkpoint's optimizer state into t. The
// checkpoint's model must be t's model (use the Model from the same
// LoadCheckpoint call when building the trainer).
func (t *Trainer) Restore(ck *Checkpoint) error {
	if ck.Model != t.Model {
		return fmt.Errorf("model: restore: the checkpoint's model is not the trainer's")
	}
	if ck.M == nil {
		return fmt.Errorf("model: restore: %w: weights-only checkpoint has no optimizer state", ErrCheckpoint)
	}
	if ck.AdamW != t.Opt.cfg {
		return fmt.Errorf("model: restore: checkpoint AdamW %+v differs from the trainer's %+v", ck.AdamW, t.Opt.cfg)
	}
	copy(t.Opt.M, ck.M)
	copy(t.Opt.V, ck.V)
	t.Opt.T = ck.Step
	return nil
}
