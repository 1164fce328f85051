package parallel

import (
	"context"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

// BenchmarkDataParallel measures weak scaling on the small preset: each
// worker runs the preset's batch per step, so workers=2 processes twice the
// tokens of workers=1 per step. In the workers=N cases each worker's kernels
// (GEMM, attention, element-wise loops) run on one goroutine
// (LimitKernelThreads(1)); workers=1-gemm-mt is the best single-process
// configuration, one worker whose kernels use every core. Compare the
// tokens/s metrics of one run:
//
//	go test -run '^$' -bench DataParallel -benchtime 4x ./parallel
func BenchmarkDataParallel(b *testing.B) {
	p, err := model.LookupPreset("small")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		workers int
		threads int
	}{
		{"workers=1", 1, 1},
		{"workers=2", 2, 1},
		{"workers=1-gemm-mt", 1, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			defer LimitKernelThreads(LimitKernelThreads(c.threads))
			benchTrain(b, p, c.workers)
		})
	}
}

func benchTrain(b *testing.B, p model.Preset, workers int) {
	m, err := model.New(p.Config, 1)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := New(m, Config{Workers: workers, Batch: workers * p.Batch,
		Schedule: model.Schedule{Peak: 1e-3}, AdamW: model.DefaultAdamW(), ClipNorm: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	data, err := model.NewSampler(syntheticText(1<<20), p.Config.SeqLen, 1)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := tr.Step(ctx, data); err != nil { // warm up pools and buffers
		b.Fatal(err)
	}
	tokens := 0
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		st, err := tr.Step(ctx, data)
		if err != nil {
			b.Fatal(err)
		}
		tokens += st.Tokens
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds()/float64(workers), "tokens/s/worker")
	// CPU time per token shows the work done, which on a machine shared
	// with other jobs separates the trainer's overhead from lost cores.
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(tokens), "cpu-µs/token")
	}
}
