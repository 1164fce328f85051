package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

// defaults returns the flag defaults, as main sets them.
func defaults() options {
	return options{preset: "tiny", minutes: 3, lr: 3e-3, warmup: 100, decay: "cosine", out: "out/pretrain",
		seed: 1, evalEvery: 250, evalWindows: 64, attention: "flash", sampleLen: 300, precision: "fp32", set: map[string]bool{}}
}

func TestValidateFlags(t *testing.T) {
	d := defaults()
	if err := d.validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if d.prec != model.PrecisionFP32 {
		t.Errorf("validate parsed -precision %q as %v, want %v", d.precision, d.prec, model.PrecisionFP32)
	}
	for _, c := range []struct {
		mut  func(*options)
		want string
	}{
		{func(o *options) { o.precision = "fp16" }, "-precision"},
		{func(o *options) { o.evalEvery = -1 }, "-eval-every"},
		{func(o *options) { o.batch = -2 }, "-batch"},
		{func(o *options) { o.steps = -5 }, "-steps"},
		{func(o *options) { o.steps, o.set["steps"] = 0, true }, "-steps 0"},
		{func(o *options) { o.minutes = math.NaN() }, "-minutes"},
		{func(o *options) { o.minutes = -1 }, "-minutes"},
		{func(o *options) { o.steps, o.set["steps"], o.set["minutes"] = 10, true, true }, "not both"},
		{func(o *options) { o.minutes = 0 }, "give -steps N or -minutes M"},
		{func(o *options) { o.lr = 0 }, "-lr"},
		{func(o *options) { o.lr = math.Inf(1) }, "-lr"},
		{func(o *options) { o.warmup = -1 }, "-warmup"},
		{func(o *options) { o.decay = "linear" }, "-decay"},
		{func(o *options) { o.evalWindows = 0 }, "-eval-windows"},
		{func(o *options) { o.sampleLen = -1 }, "-sample"},
		{func(o *options) { o.attention = "fast" }, "-attention"},
		{func(o *options) { o.preset = "huge" }, "-preset"},
		{func(o *options) { o.out = "" }, "-out"},
	} {
		o := defaults()
		c.mut(&o)
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", o, err, c.want)
		}
	}
	o := defaults()
	o.evalEvery = 0 // only at the end
	if err := o.validate(); err != nil {
		t.Errorf("-eval-every 0: %v", err)
	}
}

func TestPlan(t *testing.T) {
	o := defaults()
	o.steps, o.set["steps"] = 40, true
	p, err := plan(o, nil)
	if err != nil || p.target != 40 || p.schedule != (model.Schedule{Peak: 3e-3, Warmup: 100, Total: 40, MinRatio: 0.1, Decay: "cosine"}) {
		t.Errorf("fresh -steps 40: %+v, %v", p, err)
	}
	p, err = plan(defaults(), nil)
	if err != nil || p.target != 0 || p.budget.Minutes() != 3 || !p.fixTotal {
		t.Errorf("fresh -minutes: %+v, %v", p, err)
	}

	saved := model.Schedule{Peak: 1e-3, Warmup: 5, Total: 30, MinRatio: 0.1, Decay: "cosine"}
	ck := &model.Checkpoint{Step: 20, Schedule: &saved}
	// No flags: finish the saved run, on the saved schedule.
	if p, err = plan(defaults(), ck); err != nil || p.target != 30 || p.schedule != saved {
		t.Errorf("resume without flags: %+v, %v", p, err)
	}
	// -steps N is the step to reach: the same N keeps the schedule.
	o = defaults()
	o.steps, o.set["steps"] = 30, true
	if p, err = plan(o, ck); err != nil || p.target != 30 || p.schedule != saved {
		t.Errorf("resume -steps 30: %+v, %v", p, err)
	}
	// A longer run moves the cosine's end (the original bug: the total
	// ignored the offset and the run trained at the floor).
	o.steps = 50
	if p, err = plan(o, ck); err != nil || p.target != 50 || p.schedule.Total != 50 || p.schedule.LR(20) <= saved.Peak*saved.MinRatio {
		t.Errorf("resume -steps 50: %+v, %v", p, err)
	}
	o.steps = 20
	if _, err = plan(o, ck); err == nil {
		t.Error("-steps at the checkpoint's step accepted")
	}
	// Explicit flags override the saved values, defaults do not.
	o = defaults()
	o.lr, o.set["lr"] = 5e-4, true
	if p, _ = plan(o, ck); p.schedule.Peak != 5e-4 || p.schedule.Warmup != 5 {
		t.Errorf("-lr override: %+v", p.schedule)
	}
	// -minutes on resume: a budget, the cosine's end re-estimated.
	o = defaults()
	o.minutes, o.set["minutes"] = 1, true
	if p, err = plan(o, ck); err != nil || p.target != 0 || !p.fixTotal {
		t.Errorf("resume -minutes 1: %+v, %v", p, err)
	}
	// A checkpoint without a schedule (older file) uses the flags.
	if p, err = plan(defaults(), &model.Checkpoint{Step: 20}); err != nil || p.schedule.Peak != 3e-3 || p.budget.Minutes() != 3 || len(p.notes) == 0 {
		t.Errorf("old checkpoint: %+v, %v", p, err)
	}
}

// testCorpus writes a small Go-like source tree with both training and
// validation files (by the corpus's CRC-32 rule).
func testCorpus(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	val := 0
	for i := 0; i < 60 || val < 3; i++ {
		rel := fmt.Sprintf("pkg%d/f.go", i)
		if crc32.ChecksumIEEE([]byte(rel))%20 == 0 {
			val++
		}
		var b strings.Builder
		fmt.Fprintf(&b, "package pkg%d\n\n", i)
		for j := 0; j < 40; j++ {
			fmt.Fprintf(&b, "func F%d(x int) int {\n\tif x > %d {\n\t\treturn x - %d\n\t}\n\treturn x * %d\n}\n\n", j, i+j, j, i)
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, rel), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// A cosine run of 6 steps interrupted (Ctrl-C) after step 3 saves its
// checkpoint and loss curve; resumed without flags it finishes the saved
// run, and its weights equal those of 6 uninterrupted steps bit for bit.
// The JSON tells this run's steps and tokens from the total.
func TestInterruptAndResumeMatchUninterrupted(t *testing.T) {
	corpus := testCorpus(t)
	base := func(out string) options {
		o := defaults()
		o.corpusRoot, o.out, o.batch, o.warmup, o.evalWindows, o.sampleLen = corpus, out, 2, 2, 2, 8
		o.set["batch"], o.set["warmup"] = true, true
		return o
	}
	dir := t.TempDir()
	full := base(filepath.Join(dir, "full"))
	full.steps, full.set["steps"], full.evalEvery = 6, true, 0
	if _, err := run(context.Background(), full, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}

	cut := base(filepath.Join(dir, "cut"))
	cut.steps, cut.set["steps"], cut.evalEvery = 6, true, 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cut.onStep = func(st model.StepStats) {
		if st.Step == 3 {
			cancel()
		}
	}
	var log bytes.Buffer
	_, err := run(ctx, cut, io.Discard, &log)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted after step 3") {
		t.Fatalf("interrupted run: %v", err)
	}
	for _, f := range []string{"checkpoint.safetensors", "loss.png"} {
		if _, err := os.Stat(filepath.Join(cut.out, f)); err != nil {
			t.Errorf("the interrupted run did not save %s: %v", f, err)
		}
	}
	if !strings.Contains(log.String(), "checkpoint saved") {
		t.Errorf("the interrupted run did not say it saved:\n%s", log.String())
	}

	resumed := base(filepath.Join(dir, "resumed"))
	resumed.resume = filepath.Join(cut.out, "checkpoint.safetensors")
	resumed.set = map[string]bool{} // no -steps, -lr or -warmup: everything from the checkpoint
	resumed.batch = 2
	var out bytes.Buffer
	res, err := run(context.Background(), resumed, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want, err := model.LoadCheckpoint(filepath.Join(full.out, "checkpoint.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := model.LoadCheckpoint(res.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if got.Step != 6 || *got.Schedule != *want.Schedule {
		t.Fatalf("resumed to step %d with schedule %+v, want 6 and %+v", got.Step, got.Schedule, want.Schedule)
	}
	for i, w := range want.Model.Weights.Data {
		if got.Model.Weights.Data[i] != w {
			t.Fatalf("weight %d: resumed %v, uninterrupted %v", i, got.Model.Weights.Data[i], w)
		}
	}
	for i := range want.M {
		if got.M[i] != want.M[i] || got.V[i] != want.V[i] {
			t.Fatalf("optimizer moment %d differs after resuming", i)
		}
	}

	b, _ := json.Marshal(res)
	var j map[string]any
	json.Unmarshal(b, &j)
	tiny, _ := model.LookupPreset("tiny")
	for k, v := range map[string]any{"preset": "tiny", "steps_total": 6.0, "steps_start": 3.0, "steps_this_run": 3.0,
		"tokens_this_run": float64(3 * 2 * tiny.Config.SeqLen), "batch": 2.0, "resumed_from": resumed.resume} {
		if j[k] != v {
			t.Errorf("JSON %s = %v, want %v", k, j[k], v)
		}
	}
	if res.Model != tiny.Config || res.Schedule.Total != 6 {
		t.Errorf("JSON model %+v schedule %+v", res.Model, res.Schedule)
	}
}

// A stop with non-finite weights writes no checkpoint, keeping the file
// already at the path; the loss curve is still saved.
func TestStopEarlyKeepsGoodCheckpointOverNonFiniteWeights(t *testing.T) {
	cfg := model.Config{Vocab: 256, DModel: 16, Layers: 1, Heads: 2, KVHeads: 2, SeqLen: 8, MLPRatio: 2,
		TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: model.AttentionFlash}
	m, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: 1, Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "checkpoint.safetensors")
	if err := tr.Save(ckpt, []byte("good")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(ckpt)
	m.Weights.Data[5] = float32(math.NaN())
	plotted := false
	var log bytes.Buffer
	say := func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) }
	cause := fmt.Errorf("step 2: %w", model.ErrNonFinite)
	err = stopEarly(cause, tr, []byte("bad"), ckpt, func() error { plotted = true; return nil }, "loss.png", say)
	if !errors.Is(err, model.ErrNonFinite) || !plotted {
		t.Errorf("error %v, plot saved %v", err, plotted)
	}
	if after, _ := os.ReadFile(ckpt); !bytes.Equal(after, before) {
		t.Error("a checkpoint with a NaN weight overwrote the good one")
	}
	if !strings.Contains(log.String(), "not written") || !strings.Contains(log.String(), "lower -lr") {
		t.Errorf("log:\n%s", log.String())
	}
}
