// Command lora compares full fine-tuning with LoRA on a domain held out of
// pretraining: it pretrains a GPT on the Go corpus without net/http/ (or
// loads one with -base), then fine-tunes it on net/http/ with the same
// steps and data in each of these ways:
//
//   - full: every weight trains (AdamW over the whole model);
//   - lora: rank-8 LoRA (alpha 32, dropout 0.1) on every linear layer but
//     the head, base frozen;
//   - lora-int8: the same on an int8 base (quant's weight-only int8 layers,
//     whose float32 weights are released, and which train as frozen ops
//     that dequantize a panel at a time), also merged back into int8 at the
//     end to show the requantization cost.
//
// It prints a table of trainable parameters, peak Go heap during training
// (sampled from runtime/metrics every millisecond, with a collection
// between steps), live heap after a step, step time, held-out bits/byte before and
// after, and the size of what one would deploy (the full checkpoint, or the
// adapter), and saves the LoRA adapter in PEFT's format.
//
//	go run ./examples/lora -preset small -pretrain-steps 1000 -steps 300
//	go run ./examples/lora -preset medium -pretrain-steps 0 -batch 1 -seq 128 -steps 8
//
// The first is the quality comparison (the pretrained base is written to
// -out and can be reused with -base); the second measures memory and step
// time where weights and optimizer state dominate (a random base is enough
// for that, its bits/byte mean nothing).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/quant"
)

type options struct {
	preset        string
	base          string
	pretrainSteps int
	pretrainBatch int
	pretrainLR    float64
	steps         int
	batch         int
	seq           int
	lrFull        float64
	lrLoRA        float64
	loraWD        float64
	r             int
	alpha         float64
	dropout       float64
	methods       string
	evalWindows   int
	out           string
	seed          uint64
	jsonOut       bool
}

// row is one fine-tuning method's results.
type row struct {
	Method          string  `json:"method"`
	Status          string  `json:"status,omitempty"` // non-empty when the method did not run
	Trainable       int     `json:"trainable_params"`
	PeakHeapBytes   uint64  `json:"peak_heap_bytes"`
	LiveHeapBytes   uint64  `json:"live_heap_bytes"`
	StepMS          float64 `json:"step_ms"`
	BPBBefore       float64 `json:"bits_per_byte_before"`
	BPBAfter        float64 `json:"bits_per_byte_after"`
	Deploy          string  `json:"deploy_path"`
	DeployBytes     int64   `json:"deploy_bytes"`
	MergeMaxAbsErr  float64 `json:"merge_max_abs_err,omitempty"`
	FinalTrainLossN float64 `json:"final_train_loss_nats"`
	BPBQuantBase    float64 `json:"int8_base_bits_per_byte,omitempty"`
	BPBMerged       float64 `json:"int8_merged_bits_per_byte,omitempty"`
}

type result struct {
	Preset        string  `json:"preset"`
	Params        int     `json:"base_params"`
	Steps         int     `json:"steps"`
	Batch         int     `json:"batch"`
	Seq           int     `json:"seq"`
	Base          string  `json:"base"`
	BaseBPB       float64 `json:"base_bits_per_byte"`
	Rows          []row   `json:"rows"`
	MemRatio      float64 `json:"lora_vs_full_peak_heap"`
	LiveRatio     float64 `json:"lora_vs_full_live_heap"`
	TimeRatio     float64 `json:"lora_vs_full_step_time"`
	SizeRatio     float64 `json:"adapter_vs_checkpoint_size"`
	Recovery      float64 `json:"lora_recovery_of_full_improvement"`
	Int8MemRatio  float64 `json:"lora_int8_vs_full_peak_heap,omitempty"`
	Int8LiveRatio float64 `json:"lora_int8_vs_full_live_heap,omitempty"`
	Int8TimeRatio float64 `json:"lora_int8_vs_full_step_time,omitempty"`
	AdapterOutDir string  `json:"adapter_dir"`
}

func main() {
	var o options
	flag.StringVar(&o.preset, "preset", "small", "model preset: tiny, small or medium")
	flag.StringVar(&o.base, "base", "", "base checkpoint to fine-tune (default: pretrain one)")
	flag.IntVar(&o.pretrainSteps, "pretrain-steps", 600, "pretraining steps when -base is not given (0: random base, for memory and time only)")
	flag.IntVar(&o.pretrainBatch, "pretrain-batch", 0, "pretraining batch (0: the preset's)")
	flag.Float64Var(&o.pretrainLR, "pretrain-lr", 3e-3, "pretraining peak learning rate")
	flag.IntVar(&o.steps, "steps", 300, "fine-tuning steps, the same for every method")
	flag.IntVar(&o.batch, "batch", 0, "fine-tuning batch (0: the preset's)")
	flag.IntVar(&o.seq, "seq", 0, "fine-tuning sequence length (0: the preset's)")
	flag.Float64Var(&o.lrFull, "lr-full", 3e-4, "peak learning rate of full fine-tuning")
	flag.Float64Var(&o.lrLoRA, "lr-lora", 6e-3, "peak learning rate of LoRA")
	flag.Float64Var(&o.loraWD, "lora-weight-decay", 0, "AdamW weight decay of the adapter matrices (Hugging Face Trainer's default is 0; full fine-tuning keeps GPT-2's 0.1)")
	flag.IntVar(&o.r, "r", 8, "LoRA rank")
	flag.Float64Var(&o.alpha, "alpha", 32, "LoRA alpha")
	flag.Float64Var(&o.dropout, "dropout", 0.1, "LoRA dropout")
	flag.StringVar(&o.methods, "methods", "full,lora,lora-int8", "methods to run, comma-separated")
	flag.IntVar(&o.evalWindows, "eval-windows", 64, "held-out validation windows")
	flag.StringVar(&o.out, "out", "out/lora", "output directory")
	flag.Uint64Var(&o.seed, "seed", 1, "seed")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as one JSON object on the last line")
	flag.Parse()

	report.Main("lora", o.jsonOut, func(ctx context.Context, stdout, stderr io.Writer) (*result, error) {
		return run(ctx, o, stdout, stderr)
	})
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) (*result, error) {
	say := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	if o.steps <= 0 {
		return nil, errors.New("-steps must be positive")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	preset, err := model.LookupPreset(o.preset)
	if err != nil {
		return nil, err
	}
	if o.batch == 0 {
		o.batch = preset.Batch
	}
	if o.pretrainBatch == 0 {
		o.pretrainBatch = preset.Batch
	}
	basePath := o.base
	if basePath == "" {
		basePath = filepath.Join(o.out, "base.safetensors")
		if err := pretrain(ctx, o, preset.Config, basePath, say, stderr); err != nil {
			return nil, err
		}
	}
	base, err := model.Load(basePath)
	if err != nil {
		return nil, err
	}
	cfg := base.Config
	if o.seq == 0 {
		o.seq = cfg.SeqLen
	}
	if o.seq > cfg.SeqLen {
		return nil, fmt.Errorf("-seq %d exceeds the base's %d positions", o.seq, cfg.SeqLen)
	}

	corpus, err := model.LoadCorpus(ctx, model.CorpusOptions{Include: []string{model.HeldOutDomain}, Exclude: []string{}})
	if err != nil {
		return nil, err
	}
	say("fine-tuning domain %s: %d training and %d validation bytes", model.HeldOutDomain, len(corpus.Train), len(corpus.Val))
	valIn, valTg, err := model.ValidationWindows(corpus.Val, o.evalWindows, o.seq, 1)
	if err != nil {
		return nil, err
	}
	evaluate := func(m *model.Model) (float64, error) { return m.Evaluate(valIn, valTg, o.seq, 8) }
	baseBPB, err := evaluate(base)
	if err != nil {
		return nil, err
	}
	say("base: %s, %d parameters, held-out %.4f bits/byte", basePath, base.NumParams(), baseBPB)
	params := base.NumParams()
	base = nil // each method loads its own copy, so the heap holds one model at a time

	res := &result{Preset: o.preset, Params: params, Steps: o.steps, Batch: o.batch, Seq: o.seq, Base: basePath, BaseBPB: baseBPB}
	for _, method := range strings.Split(o.methods, ",") {
		method = strings.TrimSpace(method)
		if method == "" {
			continue
		}
		r, err := fineTune(ctx, o, method, basePath, corpus.Train, evaluate, stderr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		r.BPBBefore = baseBPB
		res.Rows = append(res.Rows, r)
	}
	res.AdapterOutDir = filepath.Join(o.out, "adapter")
	summarize(res)
	printTable(stdout, o, res)
	return res, nil
}

func pretrain(ctx context.Context, o options, cfg model.Config, path string, say func(string, ...any), stderr io.Writer) error {
	m, err := model.New(cfg, o.seed)
	if err != nil {
		return err
	}
	if o.pretrainSteps <= 0 {
		say("no pretraining: a randomly initialized base (for memory and time only)")
		return m.Save(path)
	}
	corpus, err := model.LoadCorpus(ctx, model.CorpusOptions{})
	if err != nil {
		return err
	}
	say("pretraining corpus (without %s): %d bytes", model.HeldOutDomain, len(corpus.Train))
	data, err := model.NewSampler(corpus.Train, cfg.SeqLen, o.seed)
	if err != nil {
		return err
	}
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: o.pretrainBatch,
		Schedule: model.Schedule{Peak: o.pretrainLR, Warmup: min(100, o.pretrainSteps/10), Total: o.pretrainSteps, MinRatio: 0.1},
		AdamW:    model.DefaultAdamW(), ClipNorm: 1})
	if err != nil {
		return err
	}
	defer tr.Close()
	bar := report.NewProgress(stderr, "pretrain")
	ema := report.EMA{Decay: 0.95}
	err = tr.Train(ctx, data, o.pretrainSteps, func(st model.StepStats) {
		loss := ema.Add(st.Loss)
		bar.Update(float64(st.Step)/float64(o.pretrainSteps), fmt.Sprintf("step %d loss %.3f bpb", st.Step, model.BitsPerByte(loss)))
	})
	if err != nil {
		bar.Finish("stopped")
		return err
	}
	bar.Finish(fmt.Sprintf("pretrained %d steps", o.pretrainSteps))
	return m.Save(path)
}

// heapSampler polls the Go heap's object bytes and keeps the maximum.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func heapNow() uint64 {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.sample()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				h.sample()
			}
		}
	}()
	return h
}

func (h *heapSampler) sample() {
	v := heapNow()
	for {
		old := h.peak.Load()
		if v <= old || h.peak.CompareAndSwap(old, v) {
			return
		}
	}
}

func (h *heapSampler) finish() uint64 {
	close(h.stop)
	h.wg.Wait()
	h.sample()
	return h.peak.Load()
}

// fineTune runs one method from a freshly loaded base and measures it.
func fineTune(ctx context.Context, o options, method, basePath string, train []byte, evaluate func(*model.Model) (float64, error), stderr io.Writer) (row, error) {
	r := row{Method: method}
	m, err := model.Load(basePath)
	if err != nil {
		return r, err
	}
	var lm *lora.Model
	loraCfg := lora.Config{R: o.r, Alpha: o.alpha, Dropout: o.dropout, TargetModules: []string{lora.AllLinear}, Seed: o.seed, BaseModel: basePath}
	lr := o.lrFull
	switch method {
	case "full":
	case "lora":
		if lm, err = lora.Apply(m, loraCfg); err != nil {
			return r, err
		}
		lr = o.lrLoRA
	case "lora-int8":
		// QLoRA-style with int8 instead of 4-bit: every linear layer becomes
		// quant's weight-only int8 layer (per-output-channel scales), and
		// the adapters train on top of it.
		for _, name := range m.LinearNames() {
			l, err := m.Linear(name)
			if err != nil {
				return r, err
			}
			d, ok := l.(*model.DenseLinear)
			if !ok {
				return r, fmt.Errorf("layer %s is a %T", name, l)
			}
			in, out := d.Dims()
			var b []float32
			if d.Bias != nil {
				b = d.Bias.Data
			}
			q, err := quant.NewLinear(d.Weight.Data, b, in, out, quant.LinearOptions{Act: quant.ActFloat})
			if err != nil {
				return r, err
			}
			if err := m.SetLinear(name, q); err != nil {
				return r, err
			}
		}
		// The int8 layers own their weights: free the float32 ones they
		// replaced, so the base holds a byte per linear weight. (In the
		// training graph the int8 layers dequantize a panel at a time.)
		freed, err := m.ReleaseReplaced()
		if err != nil {
			return r, err
		}
		fmt.Fprintf(stderr, "int8 base: released %.1f MiB of float32 linear weights\n", float64(freed)/(1<<20))
		if r.BPBQuantBase, err = evaluate(m); err != nil {
			return r, err
		}
		if lm, err = lora.Apply(m, loraCfg); err != nil {
			return r, err
		}
		lr = o.lrLoRA
	default:
		return r, fmt.Errorf("unknown method %q (want full, lora or lora-int8)", method)
	}
	r.Trainable = m.Trainable().Len()
	data, err := model.NewSampler(train, o.seq, o.seed+100) // the same batches for every method
	if err != nil {
		return r, err
	}

	// Objects with finalizers (gorgonia's, from the previous method's
	// graphs) survive one collection: collect until the heap stops
	// shrinking so that each method starts from the same clean heap.
	for prev := uint64(1<<63 - 1); ; {
		runtime.GC()
		h := heapNow()
		if h >= prev {
			break
		}
		prev = h
	}
	sampler := startSampler()
	adamw := model.DefaultAdamW()
	if lm != nil {
		adamw.WeightDecay = o.loraWD
	}
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: o.batch, SeqLen: o.seq,
		Schedule: model.Schedule{Peak: lr, Warmup: min(20, o.steps/10), Total: o.steps, MinRatio: 0.1},
		AdamW:    adamw, ClipNorm: 1})
	if err != nil {
		sampler.finish()
		return r, err
	}
	bar := report.NewProgress(stderr, method)
	var times []float64
	var live uint64
	for i := 0; i < o.steps; i++ {
		t0 := time.Now()
		st, err := tr.Step(ctx, data)
		if err != nil {
			bar.Finish("stopped")
			sampler.finish()
			return r, err
		}
		times = append(times, time.Since(t0).Seconds()*1000)
		sampler.sample()
		r.FinalTrainLossN = st.Loss
		// A collection between steps (not timed) keeps the garbage of one
		// step from piling up to the GC's 2× target, so the peak measures
		// what training holds plus what one step allocates, for every
		// method alike; live is what stays after the collection.
		runtime.GC()
		live = max(live, heapNow())
		bar.Update(float64(i+1)/float64(o.steps), fmt.Sprintf("step %d loss %.3f bpb", st.Step, model.BitsPerByte(st.Loss)))
	}
	r.PeakHeapBytes = sampler.finish()
	r.LiveHeapBytes = live
	bar.Finish(fmt.Sprintf("%s: %d steps", method, o.steps))
	tr.Close()
	r.StepMS = median(times[min(1, len(times)-1):])
	if r.BPBAfter, err = evaluate(m); err != nil {
		return r, err
	}
	switch method {
	case "full":
		r.Deploy = filepath.Join(o.out, "full.safetensors")
		if err := m.Save(r.Deploy); err != nil {
			return r, err
		}
		r.DeployBytes = fileSize(r.Deploy)
	default:
		r.Deploy = filepath.Join(o.out, "adapter")
		if method == "lora-int8" {
			r.Deploy = filepath.Join(o.out, "adapter-int8")
			// What merging into the int8 base would cost in accuracy.
			rep, err := lm.Merge()
			if err != nil {
				return r, err
			}
			r.MergeMaxAbsErr = rep.MaxAbsErr
			if r.BPBMerged, err = evaluate(m); err != nil {
				return r, err
			}
			if _, err := lm.Unmerge(); err != nil {
				return r, err
			}
		}
		if err := lm.Active().Save(r.Deploy); err != nil {
			return r, err
		}
		r.DeployBytes = fileSize(filepath.Join(r.Deploy, lora.WeightsFile)) + fileSize(filepath.Join(r.Deploy, lora.ConfigFile))
	}
	return r, nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func summarize(res *result) {
	var full, lr, q *row
	for i := range res.Rows {
		switch r := &res.Rows[i]; {
		case r.Status != "":
		case r.Method == "full":
			full = r
		case r.Method == "lora":
			lr = r
		case r.Method == "lora-int8":
			q = r
		}
	}
	if full == nil || lr == nil {
		return
	}
	res.MemRatio = float64(lr.PeakHeapBytes) / float64(full.PeakHeapBytes)
	res.LiveRatio = float64(lr.LiveHeapBytes) / float64(full.LiveHeapBytes)
	res.TimeRatio = lr.StepMS / full.StepMS
	res.SizeRatio = float64(lr.DeployBytes) / float64(full.DeployBytes)
	if gain := res.BaseBPB - full.BPBAfter; gain != 0 {
		res.Recovery = (res.BaseBPB - lr.BPBAfter) / gain
	}
	if q != nil {
		res.Int8MemRatio = float64(q.PeakHeapBytes) / float64(full.PeakHeapBytes)
		res.Int8LiveRatio = float64(q.LiveHeapBytes) / float64(full.LiveHeapBytes)
		res.Int8TimeRatio = q.StepMS / full.StepMS
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func printTable(w io.Writer, o options, res *result) {
	fmt.Fprintf(w, "%s preset (%d parameters), %d fine-tuning steps at batch %d × %d on %s\n", res.Preset, res.Params, res.Steps, res.Batch, res.Seq, model.HeldOutDomain)
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\ttrainable\tpeak heap\tlive heap\tstep\tbits/byte before\tafter\tdeploy size\t")
	for _, r := range res.Rows {
		if r.Status != "" {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\n", r.Method, r.Status)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.0f ms\t%.4f\t%.4f\t%d B\t\n", r.Method, r.Trainable, mib(r.PeakHeapBytes), mib(r.LiveHeapBytes), r.StepMS, r.BPBBefore, r.BPBAfter, r.DeployBytes)
	}
	tw.Flush()
	for _, r := range res.Rows {
		if r.Method == "lora-int8" && r.Status == "" {
			fmt.Fprintf(w, "int8 base: %.4f bits/byte before fine-tuning; merged into int8 (requantized, max weight error %.3g): %.4f bits/byte\n", r.BPBQuantBase, r.MergeMaxAbsErr, r.BPBMerged)
		}
	}
	if res.MemRatio > 0 {
		fmt.Fprintf(w, "LoRA vs full: peak heap %.2f×, live heap %.2f×, step time %.2f×, deploy size 1/%.0f, recovers %.0f%% of full fine-tuning's bits/byte gain\n",
			res.MemRatio, res.LiveRatio, res.TimeRatio, 1/res.SizeRatio, 100*res.Recovery)
		if res.Int8MemRatio > 0 {
			fmt.Fprintf(w, "LoRA on int8 vs full: peak heap %.2f×, live heap %.2f×, step time %.2f×\n", res.Int8MemRatio, res.Int8LiveRatio, res.Int8TimeRatio)
		}
	}
	fmt.Fprintf(w, "adapter saved in %s\n", res.AdapterOutDir)
}
