//go:build unix

// Package probes reproduces, through the public API, the nine faults that
// issue 17's adversarial pass found: hostile files, API misuse, data
// parallelism under faults and crashes during saves. The probes are slow
// and some measure time and memory, so they run only when asked:
//
//	GALLEON_PROBES=1 go test -count=1 -v ./internal/probes
//
// Each Test is one probe; a failing one names the broken promise.
package probes

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/parallel"
	"github.com/galleon-ml/galleon/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A child process of a probe runs this binary with probeRole set to one of
// the roles below (TestChild), and probeArg to its argument.
const (
	probeRole = "GALLEON_PROBE_ROLE"
	probeArg  = "GALLEON_PROBE_ARG"
)

func probing(t *testing.T) {
	t.Helper()
	if os.Getenv("GALLEON_PROBES") == "" {
		t.Skip("set GALLEON_PROBES=1 to run the probes")
	}
}

func tinyModel(t testing.TB) *model.Model {
	t.Helper()
	p, err := model.LookupPreset("tiny")
	require.NoError(t, err)
	m, err := model.New(p.Config, 1)
	require.NoError(t, err)
	return m
}

// TestChild is the body of the probes' child processes.
func TestChild(t *testing.T) {
	role, arg := os.Getenv(probeRole), os.Getenv(probeArg)
	switch role {
	case "":
		t.Skip("only run as a probe's child process")
	case "load":
		// Load a hostile checkpoint and report the peak resident memory.
		_, err := model.Load(arg)
		var ru syscall.Rusage
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
		fmt.Printf("maxrss_kb=%d err=%v\n", ru.Maxrss, err)
	case "save":
		// Save forever until killed.
		m := tinyModel(t)
		for i := 0; ; i++ {
			m.Weights.Data[0] = float32(i)
			if err := m.Save(arg); err != nil {
				fmt.Println("save:", err)
				os.Exit(3)
			}
		}
	default:
		t.Fatalf("unknown role %q", role)
	}
}

// child runs this test binary in role with arg.
func child(role, arg string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), probeRole+"="+role, probeArg+"="+arg)
	return cmd
}

// Probe 1: a checkpoint padded to 4 GiB with a sparse hole is refused, and
// loading it stays under 300 MB of resident memory.
func TestProbeSparsePadding(t *testing.T) {
	probing(t)
	path := filepath.Join(t.TempDir(), "padded.safetensors")
	require.NoError(t, tinyModel(t).Save(path))
	require.NoError(t, os.Truncate(path, 4<<30))
	out, err := child("load", path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	var kb int64
	var loadErr string
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "maxrss_kb="); ok {
			kb, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if _, after, ok := strings.Cut(string(out), "err="); ok {
		loadErr, _, _ = strings.Cut(after, "\n")
	}
	t.Logf("4 GiB sparse-padded checkpoint: error %q, peak RSS %.1f MB", loadErr, float64(kb)/1024)
	assert.NotEqual(t, "<nil>", loadErr, "the padded checkpoint loaded")
	assert.Less(t, kb, int64(300<<10), "peak RSS")
}

// Probe 2: loaders given a FIFO return (an error) instead of blocking.
func TestProbeFIFO(t *testing.T) {
	probing(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	hfDir := filepath.Join(dir, "hf")
	require.NoError(t, os.Mkdir(hfDir, 0o755))
	require.NoError(t, syscall.Mkfifo(filepath.Join(hfDir, "config.json"), 0o600))
	adDir := filepath.Join(dir, "adapter")
	require.NoError(t, os.Mkdir(adDir, 0o755))
	require.NoError(t, syscall.Mkfifo(filepath.Join(adDir, "adapter_config.json"), 0o600))
	for name, load := range map[string]func() error{
		"model.Load":           func() error { _, err := model.Load(fifo); return err },
		"model.LoadCheckpoint": func() error { _, err := model.LoadCheckpoint(fifo); return err },
		"model.LoadPretrained": func() error { _, err := model.LoadPretrained(hfDir); return err },
		"quant.Load":           func() error { _, err := quant.Load(fifo); return err },
		"lora.ReadConfig":      func() error { _, err := lora.ReadConfig(adDir); return err },
	} {
		done := make(chan error, 1)
		go func() { done <- load() }()
		select {
		case err := <-done:
			assert.Error(t, err, name)
			t.Logf("%s(FIFO): %v", name, err)
		case <-time.After(10 * time.Second):
			t.Errorf("%s on a FIFO still blocks after 10 s", name)
		}
	}
}

// Probe 3: a checkpoint holding a NaN weight is refused at load, or its
// use fails.
func TestProbeNaNWeights(t *testing.T) {
	probing(t)
	path := filepath.Join(t.TempDir(), "nan.safetensors")
	require.NoError(t, tinyModel(t).Save(path))
	poison(t, path, float32(math.NaN()))
	m, err := model.Load(path)
	if err != nil {
		t.Logf("NaN weight refused at load: %v", err)
		return
	}
	_, err = m.Generate(context.Background(), []int32{1, 2, 3}, 4, model.SampleOptions{})
	assert.Error(t, err, "a model with a NaN weight generated without an error")
	t.Logf("NaN weight loaded; Generate: %v", err)
}

// poison overwrites the first element of the checkpoint's first tensor
// (in file order) with v.
func poison(t *testing.T, path string, v float32) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	n := binary.LittleEndian.Uint64(b)
	var header map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b[8:8+n], &header))
	first := uint64(math.MaxUint64)
	for name, raw := range header {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			Offsets [2]uint64 `json:"data_offsets"`
		}
		require.NoError(t, json.Unmarshal(raw, &info))
		first = min(first, info.Offsets[0])
	}
	binary.LittleEndian.PutUint32(b[8+n+first:], math.Float32bits(v))
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// noPanic runs f and turns a panic into a test failure.
func noPanic(t *testing.T, what string, f func() error) error {
	t.Helper()
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("%s panicked: %v", what, p)
				err = errors.New("panic")
			}
		}()
		err = f()
	}()
	return err
}

// Probe 4: Generate asked for math.MaxInt tokens returns an error instead
// of panicking. It allocates as it goes and slides its window past the
// context length, so such a call runs until its context ends: the probe
// gives it 2 s.
func TestProbeGenerateMaxInt(t *testing.T) {
	probing(t)
	m := tinyModel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var n int
	err := noPanic(t, "Generate(MaxInt)", func() error {
		out, err := m.Generate(ctx, []int32{1}, math.MaxInt, model.SampleOptions{})
		n = len(out)
		return err
	})
	assert.Error(t, err)
	t.Logf("Generate(MaxInt) under a 2 s deadline: %d tokens, %v", n, err)
}

func trainConfig() model.TrainConfig {
	return model.TrainConfig{Batch: 2, Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW()}
}

// Probe 5: Trainer.Step with nil data returns an error.
func TestProbeStepNil(t *testing.T) {
	probing(t)
	tr, err := model.NewTrainer(tinyModel(t), trainConfig())
	require.NoError(t, err)
	defer tr.Close()
	err = noPanic(t, "Step(nil)", func() error {
		_, err := tr.Step(context.Background(), nil)
		return err
	})
	assert.Error(t, err)
	t.Logf("Trainer.Step(ctx, nil): %v", err)
}

// Probe 6: NewTrainer refuses a NaN (and a negative) clip norm.
func TestProbeClipNorm(t *testing.T) {
	probing(t)
	for _, c := range []float64{math.NaN(), -1} {
		cfg := trainConfig()
		cfg.ClipNorm = c
		tr, err := model.NewTrainer(tinyModel(t), cfg)
		if err == nil {
			tr.Close()
		}
		assert.Error(t, err, "ClipNorm %v", c)
		t.Logf("ClipNorm %v: %v", c, err)
	}
}

func sampler(t testing.TB, seqLen int) model.Batcher {
	t.Helper()
	text := make([]byte, 1<<16)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range text {
		text[i] = byte('a' + r.IntN(26))
	}
	s, err := model.NewSampler(text, seqLen, 3)
	require.NoError(t, err)
	return s
}

type panicBatcher struct{ model.Batcher }

func (panicBatcher) NextBatch([]int32, []int32) error { panic("hostile batcher") }

// Probe 7: a batcher that panics on one rank of a NewGroup gives errors on
// both ranks within 30 s.
func TestProbeBatcherPanic(t *testing.T) {
	probing(t)
	p, err := model.LookupPreset("tiny")
	require.NoError(t, err)
	g, err := parallel.NewGroup(2)
	require.NoError(t, err)
	errs := make(chan error, 2)
	start := time.Now()
	for r := range 2 {
		go func() {
			comm, err := g.Comm(r)
			if err != nil {
				errs <- err
				return
			}
			m, err := model.New(p.Config, 1)
			if err != nil {
				errs <- err
				return
			}
			tr, err := parallel.NewRank(m, comm, parallel.Config{Batch: 4, Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW()})
			if err != nil {
				errs <- err
				return
			}
			defer tr.Close()
			data := sampler(t, p.Config.SeqLen)
			if r == 1 {
				data = panicBatcher{data}
			}
			errs <- tr.Train(context.Background(), data, 2, nil)
		}()
	}
	for range 2 {
		select {
		case err := <-errs:
			assert.Error(t, err)
			t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), firstLine(err))
		case <-time.After(30 * time.Second):
			t.Fatal("a rank is still running 30 s after the other's batcher panicked")
		}
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// Probe 8: a two-worker step of the small preset, cancelled 100 ms in,
// returns within 0.5 s of the deadline.
func TestProbeCancelMidStep(t *testing.T) {
	probing(t)
	p, err := model.LookupPreset("small")
	require.NoError(t, err)
	m, err := model.New(p.Config, 1)
	require.NoError(t, err)
	tr, err := parallel.New(m, parallel.Config{Workers: 2, Batch: 2 * p.Batch, Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW(), ClipNorm: 1})
	require.NoError(t, err)
	defer tr.Close()
	data := sampler(t, p.Config.SeqLen)
	start := time.Now()
	_, err = tr.Step(context.Background(), data) // builds the pools
	require.NoError(t, err)
	full := time.Since(start)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start = time.Now()
		_, err = tr.Step(ctx, data)
		late := time.Since(start) - 100*time.Millisecond
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		t.Logf("cancelled step %d: returned %v after the deadline (an uncancelled step takes %v)", i+1, late.Round(time.Millisecond), full.Round(time.Millisecond))
		assert.Less(t, late, 500*time.Millisecond)
	}
	_, err = tr.Step(context.Background(), data)
	assert.NoError(t, err, "step after cancelled ones")
}

// Probe 9: 20 kill -9 during saves leave a loadable file and at most one
// stray file.
func TestProbeKillDuringSave(t *testing.T) {
	probing(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	require.NoError(t, tinyModel(t).Save(path))
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 20 {
		cmd := child("save", path)
		require.NoError(t, cmd.Start())
		// Let the child start (≈ 100 ms) and save a few times.
		time.Sleep(time.Duration(150+r.IntN(150)) * time.Millisecond)
		require.NoError(t, cmd.Process.Kill(), "kill %d", i)
		_ = cmd.Wait()
	}
	_, err := model.Load(path)
	assert.NoError(t, err, "the checkpoint after 20 kills")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var stray []string
	for _, e := range entries {
		if e.Name() != filepath.Base(path) {
			stray = append(stray, e.Name())
		}
	}
	t.Logf("after 20 kill -9 during saves: load error %v, stray files %q", err, stray)
	assert.LessOrEqual(t, len(stray), 1)
}
