// Command ddp trains a GPT preset with data parallelism and reports how it
// scales: tokens/s for each worker count, the scaling efficiency against one
// worker (weak scaling: every worker keeps the per-worker batch), the best
// single-process configuration (one worker with multi-threaded kernels) for
// comparison, and the per-rank memory of model state: the ZeRO formula for
// -stage, and, measured after a step of every stage 0–3 on an in-process
// group of -zero-ranks ranks, what rank 0 keeps allocated between steps and
// what a step adds (Trainer.Memory).
//
// In process (default), workers are goroutines sharing the weights:
//
//	go run ./examples/ddp -preset small -workers 1,2 -steps 4
//
// Across processes, build with -tags mpi and launch under mpirun (the
// command line of .ci/run's MPI section); every rank keeps its own model copy and -stage
// picks what it shards:
//
//	go build -tags mpi -o ddp ./examples/ddp
//	mpirun … -np 2 ./ddp -mpi -stage 3 -preset tiny -steps 4
//
// Each rank then prints its memory after training (model state, allocated,
// transient) next to its process's resident set and peak from /proc.
//
// -comm-precision bf16 sends the gradients between ranks as bfloat16 (half
// the bytes, still summed in float32: parallel.Config.CommPrecision); every run
// reports the bytes its ranks sent per step, counted by the transport, and
// the mean step time, so that the two precisions compare side by side:
//
//	mpirun … -np 2 ./ddp -mpi -stage 0 -preset small -comm-precision bf16
//
// -model-dir DIR trains a Hugging Face model directory instead of a fresh
// preset model (model.LoadPretrained: GPT-2 or the Llama family), on the
// corpus encoded by the directory's tokenizer.json; the preset still gives
// the batch and the sequence length (capped at the model's).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/parallel"
)

type options struct {
	preset   string
	workers  []int
	steps    int
	warmup   int
	batch    int
	accum    int
	stage    int
	zeroN    int
	bucketMB float64
	seed     uint64
	lr       float64
	corpus   string
	baseline bool
	mpi      bool
	jsonOut  bool
	comm     model.Precision
	modelDir string
}

// run is one measured configuration.
type run struct {
	Workers       int     `json:"workers"`
	KernelThreads string  `json:"kernel_threads"` // "1" or "all"
	Steps         int     `json:"steps"`
	Tokens        int     `json:"tokens"`
	Seconds       float64 `json:"seconds"`
	TokensPerSec  float64 `json:"tokens_per_s"`
	Efficiency    float64 `json:"scaling_efficiency,omitempty"` // tokens/s ÷ (workers × tokens/s of 1 worker)
	Speedup       float64 `json:"speedup,omitempty"`            // tokens/s ÷ tokens/s of 1 worker
	FinalLoss     float64 `json:"final_loss_nats"`
	// CommPrecision is the gradients' format between ranks; BytesPerStep
	// is what this process's ranks sent per timed step, counted by the
	// transport (parallel.WireCounter), and SecondsPerStep the mean step
	// time.
	CommPrecision  string  `json:"comm_precision"`
	BytesPerStep   float64 `json:"bytes_sent_per_step"`
	SecondsPerStep float64 `json:"seconds_per_step"`
	WeightsHash    string  `json:"weights_hash"`
	MemoryPerRank  any     `json:"memory_per_rank,omitempty"`
}

// result is printed as one JSON line under -json.
type result struct {
	Preset       string      `json:"preset"`
	Params       int         `json:"params"`
	BatchPerRank int         `json:"batch_per_worker"`
	SeqLen       int         `json:"seq_len"`
	Stage        int         `json:"stage"`
	Runs         []run       `json:"runs"`
	Baseline     *run        `json:"single_process_multithreaded,omitempty"`
	ZeRO         []zeroEntry `json:"zero_memory_per_rank"`
	// Stages is rank 0's Trainer.Memory after one step of each ZeRO stage
	// on an in-process group of -zero-ranks ranks (NewRank + NewGroup).
	Stages []parallel.MemoryReport `json:"zero_stages_measured,omitempty"`
}

type zeroEntry struct {
	Ranks  int             `json:"ranks"`
	Stage  int             `json:"stage"`
	Memory parallel.Memory `json:"memory"`
	Total  int64           `json:"total"`
	Ratio  float64         `json:"ratio_to_stage0"`
}

func main() {
	var o options
	var workers, comm string
	flag.StringVar(&o.preset, "preset", "tiny", "model preset: tiny, small or medium")
	flag.StringVar(&workers, "workers", "1,2", "comma-separated worker counts to measure (in process)")
	flag.IntVar(&o.steps, "steps", 5, "timed optimizer steps per configuration")
	flag.IntVar(&o.warmup, "warmup", 1, "untimed steps before timing")
	flag.IntVar(&o.batch, "batch", 0, "sequences per worker per micro-batch (0: the preset's batch)")
	flag.IntVar(&o.accum, "accum", 1, "micro-batches per optimizer step")
	flag.IntVar(&o.stage, "stage", 3, "ZeRO stage whose per-rank memory is reported (and used under -mpi)")
	flag.IntVar(&o.zeroN, "zero-ranks", 2, "ranks of the in-process group on which every ZeRO stage's memory is measured (0: skip)")
	flag.Float64Var(&o.bucketMB, "bucket-mb", 25, "gradient bucket size in MiB")
	flag.Uint64Var(&o.seed, "seed", 1, "seed for initialization and data order")
	flag.Float64Var(&o.lr, "lr", 1e-3, "learning rate")
	flag.StringVar(&o.corpus, "corpus", "", "source root to train on (default: $(go env GOROOT)/src)")
	flag.BoolVar(&o.baseline, "baseline", true, "also measure one worker with multi-threaded kernels")
	flag.BoolVar(&o.mpi, "mpi", false, "run as one rank of an MPI job (build with -tags mpi, launch with mpirun)")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as one JSON object on the last line")
	flag.StringVar(&o.modelDir, "model-dir", "", "train this Hugging Face model directory (model.LoadPretrained; its tokenizer.json encodes the corpus) instead of a fresh preset model, whose batch and sequence length (capped at the model's) the runs keep")
	flag.StringVar(&comm, "comm-precision", "fp32", "format of the gradients between ranks: fp32, or bf16 (half the bytes, reduced in float32)")
	flag.Parse()
	log.SetFlags(0) // one plain line per error, as the other examples print
	usage := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "ddp: "+format+"\n", args...)
		os.Exit(2)
	}
	for _, f := range strings.Split(workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			usage("-workers entry %q: want a positive number of workers", f)
		}
		o.workers = append(o.workers, n)
	}
	var err error
	if o.comm, err = model.ParsePrecision(comm); err != nil {
		usage("-comm-precision %q: want fp32 or bf16", comm)
	}
	switch {
	case flag.NArg() > 0:
		usage("unexpected arguments %q", flag.Args())
	case o.steps < 1:
		usage("-steps %d: want at least one timed step", o.steps)
	case o.warmup < 0:
		usage("-warmup %d: want 0 or more untimed steps", o.warmup)
	case o.stage < 0 || o.stage > 3:
		usage("-stage %d: want a ZeRO stage 0, 1, 2 or 3", o.stage)
	case o.zeroN < 0:
		usage("-zero-ranks %d: want 0 (skip) or a number of ranks", o.zeroN)
	case !(o.bucketMB > 0) || math.IsInf(o.bucketMB, 0):
		usage("-bucket-mb %v: want a positive size", o.bucketMB)
	}

	// The runs print their own JSON line (under MPI, rank 0's).
	report.Main("ddp", false, func(ctx context.Context, stdout, _ io.Writer) (struct{}, error) {
		if o.mpi {
			return struct{}{}, runMPI(ctx, o)
		}
		return struct{}{}, runInProcess(ctx, o, stdout)
	})
}

func setup(ctx context.Context, o options) (model.Preset, *source, error) {
	p, err := model.LookupPreset(o.preset)
	if err != nil {
		return p, nil, err
	}
	if o.batch > 0 {
		p.Batch = o.batch
	}
	c, err := model.LoadCorpus(ctx, model.CorpusOptions{Root: o.corpus})
	if err != nil {
		return p, nil, err
	}
	return newSource(ctx, o, p, c.Train)
}

func trainConfig(o options, p model.Preset, workers int) parallel.Config {
	return parallel.Config{
		Workers: workers, Batch: workers * p.Batch, SeqLen: p.Config.SeqLen, Accum: o.accum,
		Schedule:      model.Schedule{Peak: o.lr, Warmup: 0},
		AdamW:         model.DefaultAdamW(),
		ClipNorm:      1,
		BucketBytes:   int(o.bucketMB * (1 << 20)),
		CommPrecision: o.comm,
	}
}

// measure trains a fresh model (same seed, same data) with tr for warmup +
// steps steps and times the last steps.
func measure(ctx context.Context, o options, tr *parallel.Trainer, data *source, label string, w io.Writer) (run, error) {
	cfg := tr.Config()
	s, err := data.batcher(cfg.SeqLen, o.seed)
	if err != nil {
		return run{}, err
	}
	r := run{Workers: tr.Ranks(), Steps: o.steps, CommPrecision: cfg.CommPrecision.String()}
	bar := report.NewProgress(w, label)
	total := o.warmup + o.steps
	var start time.Time
	var sent0 int64
	done := 0
	err = tr.Train(ctx, s, total, func(st model.StepStats) {
		done++
		if done == o.warmup {
			start = time.Now()
			sent0 = tr.BytesSent()
		}
		if done > o.warmup {
			r.Tokens += st.Tokens
			r.FinalLoss = st.Loss
		}
		status := fmt.Sprintf("loss %.3f", st.Loss)
		if done > o.warmup {
			status += fmt.Sprintf(", %.0f tokens/s", float64(r.Tokens)/time.Since(start).Seconds())
		}
		bar.Update(float64(done)/float64(total), status)
	})
	if err != nil {
		bar.Finish("failed")
		return r, err
	}
	if o.warmup == 0 {
		return r, errors.New("-warmup must be at least 1 (the first step starts the clock)")
	}
	r.Seconds = time.Since(start).Seconds()
	r.TokensPerSec = float64(r.Tokens) / r.Seconds
	r.SecondsPerStep = r.Seconds / float64(o.steps)
	r.BytesPerStep = float64(tr.BytesSent()-sent0) / float64(o.steps)
	r.WeightsHash = fmt.Sprintf("%016x", parallel.Hash(tr.Model().Trainable().Data))
	bar.Finish(fmt.Sprintf("%.0f tokens/s", r.TokensPerSec))
	return r, nil
}

func runInProcess(ctx context.Context, o options, stdout io.Writer) error {
	if o.warmup < 1 {
		return errors.New("-warmup must be at least 1 (the first step starts the clock)")
	}
	p, data, err := setup(ctx, o)
	if err != nil {
		return err
	}
	res := result{Preset: p.Name, BatchPerRank: p.Batch, SeqLen: p.Config.SeqLen, Stage: o.stage}
	var progress io.Writer = os.Stderr
	one := func(workers, threads int) (run, error) {
		label := fmt.Sprintf("%d worker(s), kernel threads %s", workers, threadsName(threads))
		defer parallel.LimitKernelThreads(parallel.LimitKernelThreads(threads))
		m, err := data.newModel(p, o.seed)
		if err != nil {
			return run{}, err
		}
		res.Params = m.NumParams()
		tr, err := parallel.New(m, trainConfig(o, p, workers))
		if err != nil {
			return run{}, err
		}
		defer tr.Close()
		r, err := measure(ctx, o, tr, data, label, progress)
		r.KernelThreads = threadsName(threads)
		r.MemoryPerRank = tr.Memory()
		return r, err
	}
	ws := slices.Clone(o.workers)
	if !slices.Contains(ws, 1) {
		ws = append([]int{1}, ws...) // efficiency needs the 1-worker rate
	}
	var base float64
	for _, n := range ws {
		r, err := one(n, 1)
		if err != nil {
			return err
		}
		if n == 1 {
			base = r.TokensPerSec
		}
		r.Speedup = r.TokensPerSec / base
		r.Efficiency = r.Speedup / float64(n)
		res.Runs = append(res.Runs, r)
	}
	if o.baseline {
		r, err := one(1, 0)
		if err != nil {
			return err
		}
		r.Speedup = r.TokensPerSec / base
		res.Baseline = &r
	}
	psi := res.Params
	for _, n := range ws {
		s0, _ := parallel.ZeROMemory(0, n, psi)
		m, err := parallel.ZeROMemory(o.stage, n, psi)
		if err != nil {
			return err
		}
		res.ZeRO = append(res.ZeRO, zeroEntry{Ranks: n, Stage: o.stage, Memory: m, Total: m.Total(), Ratio: float64(m.Total()) / float64(s0.Total())})
	}

	if o.zeroN > 0 {
		if res.Stages, err = measureStages(ctx, o, p, data); err != nil {
			return err
		}
	}

	fmt.Fprintf(stdout, "%s preset: %d parameters, %d sequences of %d tokens per worker per micro-batch, accumulation %d\n",
		p.Name, psi, p.Batch, p.Config.SeqLen, o.accum)
	fmt.Fprintf(stdout, "%-8s %-14s %12s %9s %11s %10s %16s (gradients in %v)\n", "workers", "kernel threads", "tokens/s", "speedup", "efficiency", "s/step", "bytes sent/step", o.comm)
	for _, r := range res.Runs {
		fmt.Fprintf(stdout, "%-8d %-14s %12.0f %8.2f× %10.0f%% %10.3f %16.0f\n", r.Workers, r.KernelThreads, r.TokensPerSec, r.Speedup, 100*r.Efficiency, r.SecondsPerStep, r.BytesPerStep)
	}
	if b := res.Baseline; b != nil {
		fmt.Fprintf(stdout, "single process, 1 worker, multi-threaded kernels: %.0f tokens/s", b.TokensPerSec)
		for _, r := range res.Runs {
			if r.Workers == 2 {
				fmt.Fprintf(stdout, " (2 workers: %.2f× that)", r.TokensPerSec/b.TokensPerSec)
			}
		}
		fmt.Fprintln(stdout)
	}

	fmt.Fprintf(stdout, "ZeRO stage %d model state per rank (fp32 params + grads + Adam m, v):\n", o.stage)
	for _, z := range res.ZeRO {
		fmt.Fprintf(stdout, "  %d rank(s): params %s, grads %s, optimizer %s, total %s (%.2f× stage 0)\n", z.Ranks,
			mib(z.Memory.Params), mib(z.Memory.Grads), mib(z.Memory.Optimizer), mib(z.Total), z.Ratio)
	}
	if len(res.Stages) > 0 {
		fmt.Fprintf(stdout, "measured per rank, %d ranks in process, after a step (Trainer.Memory of rank 0):\n", o.zeroN)
		fmt.Fprintf(stdout, "  %-6s %12s %12s %12s %12s %12s %12s\n", "stage", "model", "allocated", "params", "grads", "optimizer", "+transient")
		base := res.Stages[0].Allocated.Total()
		for _, m := range res.Stages {
			a := m.Allocated
			fmt.Fprintf(stdout, "  %-6d %12s %12s %12s %12s %12s %12s  (allocated %.2f× stage 0)\n", m.Stage, mib(m.Model.Total()), mib(a.Total()),
				mib(a.Params), mib(a.Grads), mib(a.Optimizer), mib(m.Transient), float64(a.Total())/float64(base))
		}
	}
	if o.jsonOut {
		return report.PrintJSON(stdout, res)
	}
	return nil
}

// measureStages trains one step of each ZeRO stage on an in-process group
// of o.zeroN ranks, each rank with its own model copy as under MPI, and
// returns rank 0's memory report after the step.
func measureStages(ctx context.Context, o options, p model.Preset, data *source) ([]parallel.MemoryReport, error) {
	defer parallel.LimitKernelThreads(parallel.LimitKernelThreads(1))
	n := o.zeroN
	var out []parallel.MemoryReport
	for stage := range 4 {
		g, err := parallel.NewGroup(n)
		if err != nil {
			return nil, err
		}
		reps := make([]parallel.MemoryReport, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for r := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reps[r], errs[r] = measureRank(ctx, o, p, data, g, r, stage)
				if errs[r] != nil {
					g.Abort(errs[r])
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("ddp: stage %d: %w", stage, err)
		}
		out = append(out, reps[0])
	}
	return out, nil
}

func measureRank(ctx context.Context, o options, p model.Preset, data *source, g *parallel.Group, r, stage int) (parallel.MemoryReport, error) {
	comm, err := g.Comm(r)
	if err != nil {
		return parallel.MemoryReport{}, err
	}
	m, err := data.newModel(p, o.seed)
	if err != nil {
		return parallel.MemoryReport{}, err
	}
	cfg := trainConfig(o, p, g.Size())
	cfg.Stage = stage
	tr, err := parallel.NewRank(m, comm, cfg)
	if err != nil {
		return parallel.MemoryReport{}, err
	}
	s, err := data.batcher(tr.Config().SeqLen, o.seed)
	if err == nil {
		_, err = tr.Step(ctx, s)
	}
	rep := tr.Memory()
	return rep, errors.Join(err, tr.Close())
}

func threadsName(n int) string {
	if n <= 0 {
		return "all"
	}
	return strconv.Itoa(n)
}

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }
