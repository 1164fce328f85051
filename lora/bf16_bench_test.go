//go:build unix

package lora_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/internal/cputime"
	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
)

// smolBF16Dir returns a Hugging Face directory of SmolLM2-135M's shapes
// with random weights stored as BF16, written on first use under the
// temporary directory (GALLEON_BF16_BENCH_DIR overrides the place) and
// reused by later runs.
func smolBF16Dir(b *testing.B) string {
	dir := os.Getenv("GALLEON_BF16_BENCH_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "galleon-bench-smollm2-135m-bf16")
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir
	}
	m, err := model.New(model.SmolLM2_135M(), 1)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.SavePretrained(dir, model.WithDType("bfloat16")); err != nil {
		b.Fatal(err)
	}
	return dir
}

// peakHeap samples the bytes of live heap objects every millisecond until
// stop is called, and returns the largest sample.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); <-finished; return peak.Load() }
}

// BenchmarkLoRABase trains a rank-8 LoRA adapter on every linear layer of a
// SmolLM2-135M-shaped model loaded from a BF16 checkpoint, the base widened
// to float32 (fp32) or kept in bfloat16 (bf16, model.KeepBF16), one
// 256-token sequence per step. It reports the peak of live heap objects
// from the start of loading to the end of the last step (peak-MB, sampled
// every millisecond), the live heap once the model and adapter are built
// (model-MB) and the time per step:
//
//	go test ./lora -run '^$' -bench 'LoRABase/(fp32|bf16)$' -benchtime 3x
func BenchmarkLoRABase(b *testing.B) {
	dir := smolBF16Dir(b)
	for _, kind := range []string{"fp32", "bf16"} {
		b.Run(kind, func(b *testing.B) {
			runtime.GC()
			debug.FreeOSMemory()
			stop := peakHeap()
			var opts []model.LoadOption
			if kind == "bf16" {
				opts = append(opts, model.KeepBF16())
			}
			base, err := model.LoadPretrained(dir, opts...)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := lora.Apply(base, lora.Config{R: 8, Alpha: 16, TargetModules: []string{lora.AllLinear}, Seed: 1}); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			modelMB := float64(ms.HeapAlloc) / (1 << 20) // reported at the end: ResetTimer drops metrics
			tr, err := model.NewTrainer(base, model.TrainConfig{Batch: 1, SeqLen: 256, Schedule: model.Schedule{Peak: 1e-4, Total: 1 << 20}, AdamW: model.DefaultAdamW()})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			data, err := model.NewSampler([]byte(strings.Repeat("func main() { println(\"hello, galleon\") }\n", 200)), 256, 1)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tr.Step(context.Background(), data); err != nil { // warm-up
				b.Fatal(err)
			}
			b.ResetTimer()
			cpu0 := cputime.Process()
			for b.Loop() {
				if _, err := tr.Step(context.Background(), data); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric((cputime.Process()-cpu0).Seconds()/float64(b.N), "cpu-s/step")
			b.ReportMetric(float64(stop())/(1<<20), "peak-MB")
			b.ReportMetric(modelMB, "model-MB")
			runtime.KeepAlive(base)
		})
	}
}

// BenchmarkBaseGenerate decodes 16 tokens after a 16-token prompt with the
// same model and bases as BenchmarkLoRABase (no adapter), greedily,
// reporting tokens per second of wall-clock and of CPU time:
//
//	go test ./lora -run '^$' -bench 'BaseGenerate/(fp32|bf16)$' -benchtime 3x
func BenchmarkBaseGenerate(b *testing.B) {
	dir := smolBF16Dir(b)
	for _, kind := range []string{"fp32", "bf16"} {
		b.Run(kind, func(b *testing.B) {
			var opts []model.LoadOption
			if kind == "bf16" {
				opts = append(opts, model.KeepBF16())
			}
			base, err := model.LoadPretrained(dir, opts...)
			if err != nil {
				b.Fatal(err)
			}
			prompt := make([]int32, 16)
			for i := range prompt {
				prompt[i] = int32(100 + 7*i)
			}
			cpu0 := cputime.Process()
			for b.Loop() {
				if _, err := base.Generate(context.Background(), prompt, 16, model.SampleOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(16*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(16*float64(b.N)/(cputime.Process()-cpu0).Seconds(), "tokens/cpu-s")
		})
	}
}
