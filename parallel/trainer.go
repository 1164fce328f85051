package parallel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"runtime/debug"
	"sync"
	"time"

	"github.com/galleon-ml/galleon/model"
)

// DefaultBucketBytes is the gradient bucket size used when Config.BucketBytes
// is 0: 25 MiB, as PyTorch's DistributedDataParallel.
const DefaultBucketBytes = 25 << 20

// Config holds the hyperparameters of a data-parallel run. Batch is the
// global micro-batch: its samples are split across ranks, so the result does
// not depend on the number of ranks.
type Config struct {
	Workers     int               // goroutine workers for New; 0 means 1 (NewRank uses the communicator's size)
	Batch       int               // samples (sequences) per global micro-batch, split across ranks by rows
	SeqLen      int               // tokens per sample; 0 means the model's SeqLen
	Accum       int               // micro-batches per optimizer step; 0 means 1. Communication happens once per step.
	Schedule    model.Schedule    // learning rate per step
	AdamW       model.AdamWConfig // optimizer hyperparameters
	ClipNorm    float64           // global gradient-norm clipping; 0 disables
	BucketBytes int               // gradient bucket size in bytes; 0 means DefaultBucketBytes
	Stage       int               // ZeRO stage 0–3 for NewRank; New requires 0 (its workers share the weights)

	// Exact (New only) makes the result independent of the number of
	// workers bit for bit: every sample runs forward and backward alone
	// and its gradient is kept until the reduction, which adds the
	// per-sample gradients of each shard in global sample order. It costs
	// a gradient buffer (4Ψ bytes) per sample of a step held by a worker,
	// about Batch/Workers × Accum of them, and smaller products (one
	// sample per graph run). Without it, workers reduce their own rows' summed gradients,
	// which agree with other worker counts to float32 rounding.
	Exact bool

	// CommPrecision is the format in which gradients travel between
	// ranks: model.PrecisionFP32 (the default) or model.PrecisionBF16.
	//
	// With bf16 every rank rounds its gradient to bfloat16 (round to
	// nearest, ties to even: kernels.ToBF16) for the transport, halving
	// the bytes of the gradient collectives, and the reduction stays
	// float32: the rank that owns a part widens the received bf16
	// contributions exactly and adds them in rank order in float32, then
	// rounds the sum once to bfloat16 so that it too can travel in half the
	// bytes where a stage all-gathers it (stage 0's all-reduce). The
	// reduced gradient is therefore
	//
	//	bf16( bf16(g₀) + bf16(g₁) + … )   (the sum in float32, in rank order)
	//
	// the same at every ZeRO stage and in process or over MPI, so runs stay
	// bit-for-bit repeatable and every rank holds the same weights. A
	// rank's own contribution is rounded too, so the result does not
	// depend on which rank owns which part. Only gradients change format:
	// parameters (stage 1–3 all-gathers), the initial broadcast and the
	// small control messages stay float32, and so do the gradient norm,
	// clipping and AdamW. Under NewRank the communicator must be a
	// BF16Communicator. With Exact, bf16 keeps each sample's gradient in
	// bfloat16 (half of Exact's per-sample memory) and sums the samples in
	// float32 in global sample order, so the result is still the same bits
	// for any number of workers, one included.
	CommPrecision model.Precision

	// GradCheckpointing recomputes each block's activations in the
	// backward pass (model.ReplicaOptions): less memory per worker, about
	// one more forward pass of time, the same result bit for bit.
	GradCheckpointing bool
}

func (cfg *Config) normalize(m *model.Model, ranks int) error {
	if cfg.SeqLen == 0 {
		cfg.SeqLen = m.Config.SeqLen
	}
	if cfg.Accum == 0 {
		cfg.Accum = 1
	}
	if cfg.BucketBytes == 0 {
		cfg.BucketBytes = DefaultBucketBytes
	}
	switch {
	case cfg.Batch <= 0 || cfg.Accum < 0:
		return fmt.Errorf("parallel: config: batch %d, accumulation %d", cfg.Batch, cfg.Accum)
	case cfg.Batch < ranks:
		return fmt.Errorf("parallel: config: a batch of %d samples cannot feed %d ranks", cfg.Batch, ranks)
	case cfg.SeqLen < 0 || cfg.SeqLen > m.Config.SeqLen:
		return fmt.Errorf("parallel: config: sequence length %d (model: %d)", cfg.SeqLen, m.Config.SeqLen)
	case !(cfg.Schedule.Peak > 0) || cfg.Schedule.Warmup < 0:
		return fmt.Errorf("parallel: config: learning rate %v, warmup %d", cfg.Schedule.Peak, cfg.Schedule.Warmup)
	case cfg.BucketBytes < 4:
		return fmt.Errorf("parallel: config: bucket of %d bytes", cfg.BucketBytes)
	case cfg.Stage < 0 || cfg.Stage > 3:
		return fmt.Errorf("parallel: config: ZeRO stage %d (want 0–3)", cfg.Stage)
	case cfg.Exact && cfg.Stage != 0:
		return fmt.Errorf("parallel: config: Exact is for in-process workers (New), not ZeRO stage %d", cfg.Stage)
	case !(cfg.ClipNorm >= 0):
		return fmt.Errorf("parallel: config: clip norm %v", cfg.ClipNorm)
	}
	return checkCommPrecision(cfg, nil)
}

// span is a half-open range [lo, hi).
type span struct{ lo, hi int }

func (s span) len() int { return s.hi - s.lo }

// Trainer is a data-parallel training loop; see the package comment for the
// two deployments. Its methods are not safe for concurrent use.
type Trainer struct {
	cfg    Config
	model  *model.Model
	shared bool // New: workers share one model in this process
	ranks  int
	stage  int

	group   *Group    // New only; replaced after a failed step
	workers []*worker // New: all ranks; NewRank: this rank only

	shards  []span    // rank r owns shards[r] of the flat trainable vector
	buckets []span    // fixed-order gradient buckets
	release *releaser // stage 3: gives the other ranks' parameter pages back between steps
	// gradRelease (stages 2 and 3) holds the replica's gradient buffer and
	// gives the pages outside this rank's shard back after each step.
	gradRelease *releaser

	// Stage 3 gathers each linear layer's weights only while the layer
	// computes (layers.go): the replaced layers, the originals to put back,
	// the rest of the parameters (gathered for the whole step), a scratch
	// mapping for a layer's dW and db, and the micro-batch's gradient weight.
	layers     []*zeroLinear
	origLayers map[string]model.Linear
	rest       []span
	scratch    *releaser
	gradWeight float32
	gatherHook func() // tests: runs after every per-layer all-gather

	steps           int
	inputs, targets []int32 // the step's global batch: Accum × Batch × SeqLen
	stepTargets     int     // targets of the step that carry loss (model.CountTargets of targets)

	impl    stageSteps      // the stage-specific part of a step (step.go)
	pending chan stepResult // a step that a cancelled context left running
	// cancelGrace is how long a rank whose context was cancelled before a
	// step waits for the others at the step's first exchange before it
	// aborts the group (defaultCancelGrace; tests shorten it).
	cancelGrace time.Duration

	// testHook, when set, runs in every worker after its forward and
	// backward passes; tests use it to inject errors and panics.
	testHook func(rank, step int) error
}

type worker struct {
	rank    int
	rows    span // this rank's samples of each global micro-batch
	comm    Communicator
	replica *model.Replica
	opt     *model.AdamW // over this rank's shard (or the whole set at stage 0)
	optSpan span
	samples [][]float32 // Exact: the weighted gradient of each of this worker's samples, micro-batch-major
}

// New returns a trainer whose cfg.Workers goroutine workers share m's
// weights in this process.
func New(m *model.Model, cfg Config) (*Trainer, error) {
	if m == nil {
		return nil, errors.New("parallel: nil model")
	}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	if cfg.Workers < 0 {
		return nil, fmt.Errorf("parallel: config: %d workers", cfg.Workers)
	}
	if cfg.Stage != 0 {
		return nil, fmt.Errorf("parallel: config: stage %d: in-process workers share one copy of the weights (use NewRank with a Group for ZeRO stages)", cfg.Stage)
	}
	n := cfg.Workers
	if err := cfg.normalize(m, n); err != nil {
		return nil, err
	}
	t := newTrainer(m, cfg, n)
	t.shared = true
	t.impl = stageOf(t)
	g, err := NewGroup(n)
	if err != nil {
		return nil, err
	}
	t.group = g
	rows := evenCounts(cfg.Batch, n)
	lo := 0
	for r := range n {
		comm, _ := g.Comm(r)
		w, err := t.newWorker(r, span{lo, lo + rows[r]}, comm, false)
		if err != nil {
			t.Close()
			return nil, err
		}
		t.workers = append(t.workers, w)
		lo += rows[r]
	}
	return t, nil
}

// NewRank returns the trainer of one rank of comm's group, which holds its
// own model m. Every rank must call NewRank at the same time with an
// identically configured model and Config: the ranks compare a hash of their
// model configuration, parameter layout and Config, fail alike if any
// differs, and then take rank 0's initial weights. Each rank must later be
// given identical data (the same Batcher, seeded alike): every rank draws the
// whole global batch and uses its own rows. At stage 3 the trainer replaces
// m's dense linear layers (Model.SetLinear) by layers that gather their
// weights when the graph reaches them; Close puts the originals back.
func NewRank(m *model.Model, comm Communicator, cfg Config) (*Trainer, error) {
	if m == nil || comm == nil {
		return nil, errors.New("parallel: nil model or communicator")
	}
	n := comm.Size()
	cfg.Workers = n
	var invalid error
	if cfg.Exact {
		invalid = errors.New("parallel: config: Exact is for in-process workers (New)")
	} else {
		invalid = cfg.normalize(m, n)
	}
	if invalid == nil {
		invalid = checkCommPrecision(&cfg, comm)
	}
	// An invalid configuration still takes part in the exchange (with a
	// hash no valid one has), so that no rank waits for it.
	if err := checkSameConfig(comm, m, cfg, invalid != nil); err != nil || invalid != nil {
		// Ranks that share an invalid configuration agree with each
		// other; it is still invalid.
		if invalid != nil {
			return nil, invalid
		}
		return nil, err
	}
	t := newTrainer(m, cfg, n)
	t.stage = cfg.Stage
	t.impl = stageOf(t)
	rows := evenCounts(cfg.Batch, n)
	lo := 0
	for r := range comm.Rank() {
		lo += rows[r]
	}
	r := comm.Rank()
	if t.stage == 3 {
		// Before any graph binds the weights: move them to memory whose
		// other ranks' pages can be given back to the system.
		rel, err := newReleaser(m.Trainable(), t.shards[r])
		if err != nil {
			return nil, fmt.Errorf("parallel: rank %d: %w", r, err)
		}
		t.release = rel
		if err := t.shardLayersScratch(); err != nil {
			t.restoreLayers()
			t.release.close(m.Trainable())
			return nil, fmt.Errorf("parallel: rank %d: %w", r, err)
		}
	}
	w, err := t.newWorker(r, span{lo, lo + rows[r]}, comm, cfg.Stage == 0)
	if err != nil {
		t.restoreLayers()
		if t.scratch != nil {
			t.scratch.unmap()
		}
		if t.release != nil {
			t.release.close(m.Trainable())
		}
		return nil, err
	}
	t.workers = []*worker{w}
	if t.stage >= 2 {
		// Stages 2 and 3 keep only their gradient shard between steps.
		if err := t.mapGrads(w); err != nil {
			w.replica.Close()
			t.restoreLayers()
			if t.scratch != nil {
				t.scratch.unmap()
			}
			if t.release != nil {
				t.release.close(m.Trainable())
			}
			return nil, fmt.Errorf("parallel: rank %d: %w", r, err)
		}
	}
	// Rank 0's initial weights, bucket by bucket.
	ps := m.Trainable().Data
	for _, b := range t.buckets {
		if err := comm.Broadcast(ps[b.lo:b.hi], 0); err != nil {
			t.Close()
			return nil, fmt.Errorf("parallel: rank %d: broadcast of the initial weights: %w", r, err)
		}
	}
	if t.release != nil {
		t.release.release()
	}
	return t, nil
}

// mapGrads moves w's gradient buffer into memory whose pages outside the
// rank's shard can be given back to the system, and gives them back.
func (t *Trainer) mapGrads(w *worker) error {
	rel, err := newMapping(len(w.replica.Grad), t.shards[w.rank])
	if err != nil {
		return fmt.Errorf("gradients: %w", err)
	}
	if err := w.replica.SetGradBuffer(rel.data); err != nil {
		rel.unmap()
		return fmt.Errorf("parallel: %w", err)
	}
	t.gradRelease = rel
	rel.release()
	return nil
}

// shardLayersScratch replaces the linear layers (stage 3) and maps the
// scratch their backward ops use.
func (t *Trainer) shardLayersScratch() error {
	orig, err := t.shardLayers()
	t.origLayers = orig
	if err != nil {
		return err
	}
	t.rest = t.restSpans()
	biggest := 0
	for _, l := range t.layers {
		biggest = max(biggest, l.unit.len())
	}
	if t.scratch, err = newMapping(biggest, span{}); err != nil {
		return fmt.Errorf("layer gradient scratch: %w", err)
	}
	t.scratch.release()
	return nil
}

func newTrainer(m *model.Model, cfg Config, n int) *Trainer {
	psi := m.Trainable().Len()
	t := &Trainer{cfg: cfg, model: m, ranks: n, cancelGrace: defaultCancelGrace}
	t.shards = shardSpans(psi, n)
	per := max(1, cfg.BucketBytes/4)
	for lo := 0; lo < psi; lo += per {
		t.buckets = append(t.buckets, span{lo, min(lo+per, psi)})
	}
	size := cfg.Accum * cfg.Batch * cfg.SeqLen
	t.inputs, t.targets = make([]int32, size), make([]int32, size)
	return t
}

// defaultCancelGrace is Trainer.cancelGrace: long enough for the other
// ranks to finish the micro-batch they compute, short enough that a rank
// cancelled while a peer hangs still returns.
const defaultCancelGrace = 10 * time.Second

// normBlock is the unit of the gradient-norm computation and of the shard
// boundaries: 1024 elements, one 4 KiB page.
const normBlock = 1024

// shardSpans splits psi elements into n contiguous shards whose boundaries
// are multiples of normBlock elements, so that the blocks of the norm, and
// the pages a stage-3 rank gives back, never straddle two ranks.
func shardSpans(psi, n int) []span {
	s := make([]span, n)
	blocks := (psi + normBlock - 1) / normBlock
	for r := range n {
		lo := min(psi, blocks*r/n*normBlock)
		hi := min(psi, blocks*(r+1)/n*normBlock)
		if r == n-1 {
			hi = psi
		}
		s[r] = span{lo, hi}
	}
	return s
}

func (t *Trainer) newWorker(r int, rows span, comm Communicator, wholeOpt bool) (*worker, error) {
	B := rows.len()
	if t.cfg.Exact {
		B = 1
	}
	rep, err := t.model.NewReplicaWith(B, t.cfg.SeqLen, model.ReplicaOptions{GradCheckpointing: t.cfg.GradCheckpointing})
	if err != nil {
		return nil, fmt.Errorf("parallel: rank %d: %w", r, err)
	}
	w := &worker{rank: r, rows: rows, comm: comm, replica: rep}
	if t.cfg.Exact {
		w.samples = make([][]float32, rows.len()*t.cfg.Accum)
		for i := range w.samples {
			w.samples[i] = make([]float32, t.sampleWords(len(rep.Grad)))
		}
	}
	w.optSpan = t.shards[r]
	if wholeOpt {
		w.optSpan = span{0, t.model.Trainable().Len()}
	}
	if w.opt, err = shardOptimizer(t.model.Trainable(), w.optSpan, t.cfg.AdamW); err != nil {
		rep.Close()
		return nil, fmt.Errorf("parallel: rank %d: %w", r, err)
	}
	return w, nil
}

// shardOptimizer returns an AdamW whose state covers only elements s of ps:
// a parameter set made of the pieces of ps's parameters inside s (keeping
// their weight-decay flags), bound to ps's own storage. Its per-element
// update is the one the whole-set optimizer would apply.
func shardOptimizer(ps *model.ParamSet, s span, cfg model.AdamWConfig) (*model.AdamW, error) {
	var specs []model.ParamSpec
	for _, p := range ps.Params {
		lo, hi := max(p.Offset, s.lo), min(p.Offset+p.Size(), s.hi)
		if lo < hi {
			specs = append(specs, model.ParamSpec{Name: p.Name, Shape: []int{hi - lo}, Decay: p.Decay})
		}
	}
	shard, err := model.NewParamSet(specs)
	if err != nil {
		return nil, err
	}
	shard.Data = ps.Data[s.lo:s.hi:s.hi]
	for _, p := range shard.Params {
		p.Data = shard.Data[p.Offset : p.Offset+p.Size() : p.Offset+p.Size()]
	}
	return model.NewAdamW(shard, cfg)
}

// checkSameConfig all-gathers a hash of the model's configuration and
// layout and of cfg, and fails on every rank alike if any rank differs.
func checkSameConfig(comm Communicator, m *model.Model, cfg Config, invalid bool) error {
	h := fnv.New64a()
	if invalid {
		h.Write([]byte("invalid"))
	}
	enc := json.NewEncoder(h)
	if err := enc.Encode(m.Config); err != nil {
		return fmt.Errorf("parallel: hash config: %w", err)
	}
	if err := enc.Encode(m.Trainable().Layout()); err != nil {
		return fmt.Errorf("parallel: hash config: %w", err)
	}
	if err := enc.Encode(cfg); err != nil {
		return fmt.Errorf("parallel: hash config: %w", err)
	}
	n, r := comm.Size(), comm.Rank()
	buf := make([]float32, 2*n)
	putUint64(buf[2*r:], h.Sum64())
	if err := comm.AllGather(buf, fill(n, 2)); err != nil {
		return fmt.Errorf("parallel: rank %d: config check: %w", r, err)
	}
	for q := range n {
		if getUint64(buf[2*q:]) != getUint64(buf) {
			return fmt.Errorf("parallel: rank %d: the configuration of rank %d differs from rank 0's (model, layout or trainer config): %w", r, q, ErrConfigMismatch)
		}
	}
	return nil
}

// ErrConfigMismatch is wrapped by the error NewRank returns when the ranks'
// configurations differ. Its text has no package prefix: it is only ever
// seen wrapped by an error that starts with "parallel: rank N: ".
var ErrConfigMismatch = errors.New("ranks disagree on the configuration")

// ErrPeer is wrapped by the error a rank returns when another rank's failure
// stopped the step. Like ErrConfigMismatch it is only ever seen wrapped
// ("parallel: rank 0: step 2: another rank failed: rank 1"), so its text
// has no package prefix of its own.
var ErrPeer = errors.New("another rank failed")

func fill(n, v int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// Config returns the run's configuration, defaults filled in.
func (t *Trainer) Config() Config { return t.cfg }

// Model returns the trained model (this rank's copy under NewRank). At ZeRO
// stage 3 the parts of the weights that other ranks own read as zeros
// between steps: call GatherParams (on every rank) before evaluating or
// saving the model.
func (t *Trainer) Model() *model.Model { return t.model }

// GatherParams makes this rank's model whole at ZeRO stage 3 by
// all-gathering the parameter shards (a collective: every rank calls it);
// the next step releases the other ranks' parts again. At other stages, and
// under New, it does nothing.
func (t *Trainer) GatherParams() error {
	_ = t.join(context.Background())
	if t.release == nil || len(t.workers) != 1 {
		return nil
	}
	if err := t.gatherParams(t.workers[0]); err != nil {
		return fmt.Errorf("parallel: rank %d: %w", t.workers[0].rank, err)
	}
	return nil
}

// Ranks returns the number of ranks (workers).
func (t *Trainer) Ranks() int { return t.ranks }

// StepsDone returns the number of optimizer steps taken.
func (t *Trainer) StepsDone() int { return t.steps }

// SetSchedule replaces the learning-rate schedule. Under NewRank every rank
// must make the same change.
func (t *Trainer) SetSchedule(s model.Schedule) { t.cfg.Schedule = s }

// Shard returns the element range [lo, hi) of the flat trainable vector that
// rank r updates.
func (t *Trainer) Shard(r int) (lo, hi int) {
	if r < 0 || r >= t.ranks {
		return 0, 0
	}
	return t.shards[r].lo, t.shards[r].hi
}

// Close releases the workers' replicas. Under NewRank at stage 3 it first
// gathers the full parameters so that the model is whole again; every rank
// must then call Close.
func (t *Trainer) Close() error {
	_ = t.join(context.Background())
	var errs []error
	if t.release != nil && len(t.workers) == 1 {
		if err := t.gatherParams(t.workers[0]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, w := range t.workers {
		if err := w.replica.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if t.gradRelease != nil {
		t.gradRelease.unmap()
		t.gradRelease = nil
	}
	t.restoreLayers()
	if t.scratch != nil {
		t.scratch.unmap()
		t.scratch = nil
	}
	if t.release != nil {
		t.release.close(t.model.Trainable())
		t.release = nil
	}
	t.workers = nil
	return errors.Join(errs...)
}

// Train takes steps optimizer steps, calling progress (when not nil) after
// each; it stops at the first error or when ctx is cancelled (between
// steps).
func (t *Trainer) Train(ctx context.Context, data model.Batcher, steps int, progress func(model.StepStats)) error {
	return model.RunSteps(ctx, t.Step, data, steps, progress)
}

// stepResult is what every rank learns about a step.
type stepResult struct {
	loss, norm float64
	err        error
}

// Step takes one optimizer step: the Accum global micro-batches are drawn
// from data, every rank runs forward and backward on its rows of each, the
// gradients are reduced once, clipped by their global norm and applied by
// AdamW, each rank updating its shard. A failure on any rank (an error, a
// non-finite loss or gradient, a panic, in the step or in data's NextBatch)
// stops every rank, leaves the weights as they were (except after a panic
// in the update itself) and returns an error naming the rank. Under NewRank
// every rank calls Step with identical data.
//
// A context cancelled before the step stops it on every rank alike: under
// NewRank this rank still takes part in the step's first exchange, and the
// others return errors wrapping ErrPeer; if they do not reach it within 10
// s, this rank aborts the group as below. A context cancelled during the step
// is checked between micro-batches and makes Step return at once with the
// context's error: the step is abandoned before its update, and the group
// is aborted (Communicator.Abort), so that no rank waits for this one: the
// other ranks' steps fail with errors wrapping ErrAborted, and an MPI job
// ends. A forward or backward pass that was running finishes in the
// background without changing any weight; the trainer's next call waits for
// it (Step as long as its own context allows). Under New the trainer stays
// usable; under NewRank the aborted group cannot be used again.
func (t *Trainer) Step(ctx context.Context, data model.Batcher) (model.StepStats, error) {
	step := t.steps + 1
	if len(t.workers) == 0 {
		return model.StepStats{Step: step}, errors.New("parallel: trainer is closed")
	}
	if err := t.join(ctx); err != nil {
		return model.StepStats{Step: step}, fmt.Errorf("parallel: %sstep %d: %w", t.rankPrefix(), step, err)
	}
	per := t.cfg.Batch * t.cfg.SeqLen
	lr := t.cfg.Schedule.LR(step - 1)
	stats := model.StepStats{Step: step, LR: lr, Tokens: t.cfg.Accum * per}
	// A cancelled context or a data error stops the step before any work.
	// Under NewRank this rank still takes part in the step's first
	// exchange, so that every rank stops at this step instead of waiting
	// for this one.
	pre := ctx.Err()
	if pre == nil && data == nil {
		pre = errors.New("nil data")
	}
	for k := 0; pre == nil && k < t.cfg.Accum; k++ {
		if err := nextBatch(data, t.inputs[k*per:(k+1)*per], t.targets[k*per:(k+1)*per]); err != nil {
			pre = fmt.Errorf("data: %w", err)
		} else if k+1 < t.cfg.Accum {
			pre = ctx.Err()
		}
	}
	if pre == nil {
		// Every rank holds the whole global batch: each counts the
		// step's targets alike, with no exchange.
		if t.stepTargets = model.CountTargets(t.targets); t.stepTargets == 0 {
			pre = fmt.Errorf("all %d targets are the ignore index -1: %w", len(t.targets), model.ErrNoTargets)
		}
	}
	if t.shared && pre != nil {
		return stats, fmt.Errorf("parallel: step %d: %w", step, pre)
	}

	c := &commit{}
	run := func() stepResult {
		if t.shared {
			return t.runShared(ctx, c, step, lr)
		}
		return t.runWorker(ctx, t.workers[0], c, step, lr, pre)
	}
	// The step runs in its own goroutine so that a cancelled context is
	// honoured while the step computes or waits for a peer: the step is
	// abandoned before its update and the group aborted. A step cancelled
	// before it began is the clean stop instead: this rank tells the
	// others at the step's first exchange, and aborts only if they do not
	// reach it within cancelGrace. (A data error waits for them.)
	done := make(chan stepResult, 1)
	comms := t.comms()
	go func() { done <- run() }()
	stop, cause := ctx.Done(), func() error { return context.Cause(ctx) }
	var grace <-chan time.Time
	if pre != nil {
		stop = nil
		if ctx.Err() != nil {
			grace = time.After(t.cancelGrace)
			cause = func() error {
				return fmt.Errorf("%w (the other ranks did not reach the step within %v)", pre, t.cancelGrace)
			}
		}
	}
	select {
	case res := <-done:
		return t.finish(step, stats, res)
	case <-stop:
	case <-grace:
	}
	if !c.cancel() {
		return t.finish(step, stats, <-done) // committed: the update is under way
	}
	err := fmt.Errorf("parallel: %sstep %d: %w", t.rankPrefix(), step, cause())
	for _, comm := range comms {
		comm.Abort(err)
	}
	t.pending = done
	return stats, err
}

// finish ends a step that ran to its end with res.
func (t *Trainer) finish(step int, stats model.StepStats, res stepResult) (model.StepStats, error) {
	if res.err != nil {
		if t.shared {
			t.newGroup() // a failure may have left the group mid-collective
		}
		return stats, res.err
	}
	t.steps = step
	stats.Loss, stats.GradNorm = res.loss, res.norm
	return stats, nil
}

// nextBatch draws one micro-batch; a panic in data becomes an error.
func nextBatch(data model.Batcher, inputs, targets []int32) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in NextBatch: %v\n%s", p, debug.Stack())
		}
	}()
	return data.NextBatch(inputs, targets)
}

// comms returns the communicators of this trainer's workers.
func (t *Trainer) comms() []Communicator {
	cs := make([]Communicator, len(t.workers))
	for i, w := range t.workers {
		cs[i] = w.comm
	}
	return cs
}

// rankPrefix names this rank in errors under NewRank ("rank 1: "); New's
// steps belong to all workers.
func (t *Trainer) rankPrefix() string {
	if t.shared {
		return ""
	}
	return fmt.Sprintf("rank %d: ", t.workers[0].rank)
}

// join waits for a step that a cancelled context left running, and under
// New replaces the group it aborted. It returns ctx's error if ctx ends
// first (the step is then still pending).
func (t *Trainer) join(ctx context.Context) error {
	if t.pending == nil {
		return nil
	}
	select {
	case <-t.pending:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	t.pending = nil
	if t.shared {
		t.newGroup()
	}
	return nil
}

// newGroup gives New's workers a fresh group after a failed step: a panic
// or an abort may have left the old one mid-collective.
func (t *Trainer) newGroup() {
	g, _ := NewGroup(len(t.workers))
	t.group = g
	for r, w := range t.workers {
		w.comm, _ = g.Comm(r)
	}
}

// runShared runs every worker goroutine for one step and waits for all.
func (t *Trainer) runShared(ctx context.Context, c *commit, step int, lr float64) stepResult {
	results := make([]stepResult, len(t.workers))
	var wg sync.WaitGroup
	for i, w := range t.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = t.runWorker(ctx, w, c, step, lr, nil)
		}()
	}
	wg.Wait()
	// The error of the lowest rank that failed by itself; ranks stopped by
	// another's failure only report ErrPeer or ErrAborted.
	var first error
	for _, r := range results {
		if r.err == nil {
			continue
		}
		if first == nil {
			first = r.err
		}
		if !errors.Is(r.err, ErrPeer) && !errors.Is(r.err, ErrAborted) {
			first = r.err
			break
		}
	}
	if first != nil {
		return stepResult{err: first}
	}
	return results[0]
}

// runWorker is one rank's step. A panic is recovered, aborts the group so
// that no rank waits for this one, and becomes an error naming the rank.
func (t *Trainer) runWorker(ctx context.Context, w *worker, c *commit, step int, lr float64, pre error) (res stepResult) {
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("parallel: rank %d: step %d: panic: %v\n%s", w.rank, step, p, debug.Stack())
			w.comm.Abort(err)
			res = stepResult{err: err}
		}
	}()
	res.loss, res.norm, res.err = t.workerStep(ctx, w, c, step, lr, pre)
	return res
}

// setDropout points the replica's dropout masks at micro-batch k of step
// and at the global index of its first activation row (token), as
// model.Trainer does for the whole batch: a sample gets the same mask
// whichever worker holds it.
func (w *worker) setDropout(step, accum, k, row0 int) {
	w.replica.Dropout.Step = uint64(step)*uint64(accum) + uint64(k)
	w.replica.Dropout.Row0 = uint64(row0)
}

// intersectCounts returns, per rank, the number of elements of b inside the
// rank's shard.
func intersectCounts(b span, shards []span) []int {
	counts := make([]int, len(shards))
	for r, s := range shards {
		counts[r] = max(0, min(b.hi, s.hi)-max(b.lo, s.lo))
	}
	return counts
}

// Hash returns a 64-bit FNV-1a hash of the bits of xs; tests and examples
// use it to show that ranks hold bit-identical weights.
func Hash(xs []float32) uint64 {
	h := fnv.New64a()
	var b [4]byte
	for _, x := range xs {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
		h.Write(b[:])
	}
	return h.Sum64()
}
