package model_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
)

// TestGradCheckpointingMemory measures what gradient checkpointing saves
// and costs at SmolLM2-135M's shapes, B=4, T=256: full fine-tuning and
// LoRA (r=8 on every linear layer), each with and without checkpointing, in
// child processes run one after the other (peak RSS, VmHWM, is per
// process), GALLEON_GC_ROUNDS times (default 1) in turn so that their step
// times compare within one run. Each child reports its resident size once
// the model and trainer are built, its peak over GALLEON_GC_STEPS steps
// (default 3) after one warm-up step, and the median step time. It needs
// several GB of memory and minutes, so it runs only with GALLEON_GC_MEM=1:
//
//	GALLEON_GC_MEM=1 go test ./model -run TestGradCheckpointingMemory -v -timeout 30m
func TestGradCheckpointingMemory(t *testing.T) {
	if mode := os.Getenv("GALLEON_GC_MEM_CHILD"); mode != "" {
		gradCheckpointingChild(t, mode)
		return
	}
	if os.Getenv("GALLEON_GC_MEM") != "1" {
		t.Skip("set GALLEON_GC_MEM=1 to train SmolLM2-135M-shaped models with and without checkpointing")
	}
	rounds := envInt(t, "GALLEON_GC_ROUNDS", 1)
	type result struct {
		built, peak int64
		steps       []float64
	}
	modes := []string{"full,plain", "full,checkpointed", "lora,plain", "lora,checkpointed"}
	res := map[string]*result{}
	for range rounds {
		for _, mode := range modes {
			cmd := exec.Command(os.Args[0], "-test.run=^TestGradCheckpointingMemory$", "-test.v")
			cmd.Env = append(os.Environ(), "GALLEON_GC_MEM_CHILD="+mode)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", mode, err, out)
			}
			r := res[mode]
			if r == nil {
				r = &result{}
				res[mode] = r
			}
			found := false
			for _, line := range strings.Split(string(out), "\n") {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "GCMEM "); ok {
					var built, peak int64
					var step float64
					if _, err := fmt.Sscan(rest, &built, &peak, &step); err != nil {
						t.Fatalf("%s: %q: %v", mode, line, err)
					}
					r.built, r.peak = max(r.built, built), max(r.peak, peak)
					r.steps = append(r.steps, step)
					found = true
				}
			}
			if !found {
				t.Fatalf("%s: no result in\n%s", mode, out)
			}
		}
	}
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	t.Logf("SmolLM2-135M shapes, B=4, T=256; %d round(s); step time: median over rounds of each child's median", rounds)
	t.Logf("%-20s %12s %12s %14s %10s", "mode", "built MiB", "peak MiB", "peak-built MiB", "step s")
	for _, mode := range modes {
		r := res[mode]
		t.Logf("%-20s %12.0f %12.0f %14.0f %10.2f", mode, mib(r.built), mib(r.peak), mib(r.peak-r.built), median(r.steps))
	}
	for _, kind := range []string{"full", "lora"} {
		p, c := res[kind+",plain"], res[kind+",checkpointed"]
		t.Logf("%s: checkpointing peak %.2f×, above-built %.2f×, step time %.2f×", kind,
			float64(c.peak)/float64(p.peak), float64(c.peak-c.built)/float64(p.peak-p.built), median(c.steps)/median(p.steps))
		if c.peak >= p.peak {
			t.Errorf("%s: peak RSS %.0f MiB with checkpointing, %.0f MiB without", kind, mib(c.peak), mib(p.peak))
		}
	}
}

// gradCheckpointingChild trains in one mode ("full|lora,plain|checkpointed")
// and prints "GCMEM built peak medianStepSeconds".
func gradCheckpointingChild(t *testing.T, mode string) {
	kind, ckpt, _ := strings.Cut(mode, ",")
	m, err := model.New(model.SmolLM2_135M(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if kind == "lora" {
		if _, err := lora.Apply(m, lora.Config{R: 8, Alpha: 16, Dropout: 0.05, TargetModules: []string{lora.AllLinear}, Seed: 1}); err != nil {
			t.Fatal(err)
		}
	}
	const B, T = 4, 256
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: B, SeqLen: T, Schedule: model.Schedule{Peak: 1e-4, Warmup: 1},
		AdamW: model.DefaultAdamW(), ClipNorm: 1, GradCheckpointing: ckpt == "checkpointed"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	data := &randomBatches{r: rand.New(rand.NewPCG(1, 2)), vocab: m.Config.Vocab}
	ctx := context.Background()
	runtime.GC()
	built := procStatus(t, "VmRSS")
	if _, err := tr.Step(ctx, data); err != nil { // warm-up: buffers, packed weights
		t.Fatal(err)
	}
	var times []float64
	for range envInt(t, "GALLEON_GC_STEPS", 3) {
		start := time.Now()
		if _, err := tr.Step(ctx, data); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(start).Seconds())
	}
	fmt.Printf("GCMEM %d %d %.4f\n", built, procStatus(t, "VmHWM"), median(times))
}

// randomBatches fills batches with uniform random token ids.
type randomBatches struct {
	r     *rand.Rand
	vocab int
}

func (b *randomBatches) NextBatch(inputs, targets []int32) error {
	for i := range inputs {
		inputs[i], targets[i] = int32(b.r.IntN(b.vocab)), int32(b.r.IntN(b.vocab))
	}
	return nil
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// procStatus returns a size field of /proc/self/status in bytes.
func procStatus(t *testing.T, field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skipf("no %s in /proc/self/status", field)
	return 0
}
