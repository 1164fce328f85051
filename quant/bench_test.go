package quant

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/internal/cputime"
	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
)

var linearBenchShapes = [][3]int{{256, 1024, 1024}, {1024, 1024, 4096}}

func randn(rng *rand.Rand, n int, std float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * std)
	}
	return x
}

// BenchmarkInt8Linear times Linear.Forward with dynamic per-token activation
// quantization (included), the int8 GEMM and fused dequantization + bias into
// float32 outputs: the work of PyTorch's dynamic int8 Linear
// (torch.ao.quantization.quantize_dynamic on nn.Linear), on the default
// kernel for this CPU.
func BenchmarkInt8Linear(b *testing.B) {
	for _, s := range linearBenchShapes {
		m, k, n := s[0], s[1], s[2]
		b.Run(fmt.Sprintf("M=%d,K=%d,N=%d", m, k, n), func(b *testing.B) {
			benchInt8Linear(b, m, k, n)
		})
	}
}

// BenchmarkInt8LinearKernels times the same Linear forward as
// BenchmarkInt8Linear with each int8 kernel the CPU can run (vnni, w16,
// signtrick; generic in purego builds), so that the AVX2-only numbers are
// visible on a CPU whose default is another kernel. The layer is built and
// packed after the kernel is selected.
func BenchmarkInt8LinearKernels(b *testing.B) {
	for _, kn := range []string{kernels.I8KernelVNNI, kernels.I8KernelW16, kernels.I8KernelSignTrick, kernels.I8KernelGeneric} {
		for _, s := range linearBenchShapes {
			m, k, n := s[0], s[1], s[2]
			b.Run(fmt.Sprintf("kernel=%s/M=%d,K=%d,N=%d", kn, m, k, n), func(b *testing.B) {
				if !slices.Contains(kernels.I8Kernels(), kn) {
					b.Skipf("kernel %s not available (have %v)", kn, kernels.I8Kernels())
				}
				restore, err := kernels.SetI8Kernel(kn)
				if err != nil {
					b.Fatal(err)
				}
				defer restore()
				benchInt8Linear(b, m, k, n)
			})
		}
	}
}

// benchInt8Linear builds a dynamic W8A8 Linear k→n (packed by its first
// Forward, under the current kernel) and times its forward on m rows.
func benchInt8Linear(b *testing.B, m, k, n int) {
	rng := rand.New(rand.NewPCG(1, 2))
	l, err := NewLinear(randn(rng, k*n, 0.02), randn(rng, n, 0.1), k, n, LinearOptions{Act: ActDynamic})
	if err != nil {
		b.Fatal(err)
	}
	x, y := randn(rng, m*k, 1), make([]float32, m*n)
	if err := l.Forward(y, x, m); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cputime.Process()
	var times []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := l.Forward(y, x, m); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t0))
	}
	reportOps(b, 2*float64(m*n*k), cpu0)
	// The median call, as the PyTorch reference times its int8 Linear
	// (the median of single calls): one slow call, a core lost to other
	// work, moves the mean (ns/op) but not the median.
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2])/1e6, "p50-ms")
}

// reportOps reports GOP/s of wall-clock time and, where the platform
// reports CPU time, GOP per CPU-second (the figure that stays meaningful on
// a machine shared with other work) of b.N operations of ops each.
func reportOps(b *testing.B, ops float64, cpu0 time.Duration) {
	b.ReportMetric(ops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
	if cpu := cputime.Process() - cpu0; cpu > 0 && cpu0 > 0 {
		b.ReportMetric(ops*float64(b.N)/cpu.Seconds()/1e9, "GOP/cpu-s")
	}
}

// BenchmarkFP32Linear times the float32 Linear of the same shapes as the
// model runs it: nn.LinearForward (galleon's float32 GEMM, kernels.Sgemm,
// with the bias added), x [M, K] times W [K, N] plus b [N] into float32
// outputs, the counterpart of BenchmarkInt8Linear and of PyTorch's fp32
// Linear. The metric is GOP/s, as BenchmarkInt8Linear's.
func BenchmarkFP32Linear(b *testing.B) {
	for _, s := range linearBenchShapes {
		m, k, n := s[0], s[1], s[2]
		b.Run(fmt.Sprintf("M=%d,K=%d,N=%d", m, k, n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			w, bias, x, y := randn(rng, k*n, 0.02), randn(rng, n, 0.1), randn(rng, m*k, 1), make([]float32, m*n)
			if err := nn.LinearForward(y, x, w, bias, m, k, n); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if err := nn.LinearForward(y, x, w, bias, m, k, n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOP/s")
		})
	}
}

// BenchmarkW8Train times what a frozen int8 layer costs a training step
// (LoRA on an int8 base): the forward and the input gradient with the
// weight dequantized a panel at a time ("int8"), and the float32 linear on
// a cached dequantized weight ("fp32"), which needs 4 more bytes per weight.
// The shapes are the medium preset's at batch 1 × 128 and 4 × 256.
func BenchmarkW8Train(b *testing.B) {
	for _, s := range [][3]int{{128, 512, 1536}, {128, 2048, 512}, {1024, 512, 2048}} {
		rows, in, out := s[0], s[1], s[2]
		rng := rand.New(rand.NewPCG(1, 2))
		l, err := NewLinear(randn(rng, in*out, 0.02), randn(rng, out, 0.1), in, out, LinearOptions{})
		if err != nil {
			b.Fatal(err)
		}
		w := l.Dequantize()
		x, y, dy, dx := randn(rng, rows*in, 1), make([]float32, rows*out), randn(rng, rows*out, 1), make([]float32, rows*in)
		flops := 4 * float64(rows*in*out)
		b.Run(fmt.Sprintf("int8/rows=%d,in=%d,out=%d", rows, in, out), func(b *testing.B) {
			for b.Loop() {
				l.forwardFloat(y, x, rows)
				l.backwardInput(dx, dy, rows)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(fmt.Sprintf("fp32/rows=%d,in=%d,out=%d", rows, in, out), func(b *testing.B) {
			for b.Loop() {
				if err := nn.LinearForward(y, x, w, l.Bias, rows, in, out); err != nil {
					b.Fatal(err)
				}
				if err := nn.LinearBackward(dx, nil, nil, dy, x, w, rows, in, out, false); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkW8Forward times a weight-only int8 layer's forward pass at the
// row counts of decoding (1 and 4 sequences, one token each) and of a
// prompt (64), against the float32 linear on a cached dequantized weight.
// Up to gemvRows rows the int8 layer multiplies straight from the int8
// weight; beyond, through dequantized panels.
func BenchmarkW8Forward(b *testing.B) {
	for _, s := range [][3]int{{1, 512, 2048}, {4, 512, 2048}, {1, 2048, 512}, {gemvRows, 512, 2048}, {gemvRows + 1, 512, 2048}, {64, 512, 2048}} {
		rows, in, out := s[0], s[1], s[2]
		rng := rand.New(rand.NewPCG(1, 2))
		l, err := NewLinear(randn(rng, in*out, 0.02), randn(rng, out, 0.1), in, out, LinearOptions{})
		if err != nil {
			b.Fatal(err)
		}
		w := l.Dequantize()
		x, y := randn(rng, rows*in, 1), make([]float32, rows*out)
		flops := 2 * float64(rows*in*out)
		b.Run(fmt.Sprintf("int8/rows=%d,in=%d,out=%d", rows, in, out), func(b *testing.B) {
			for b.Loop() {
				if err := l.Forward(y, x, rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(fmt.Sprintf("fp32/rows=%d,in=%d,out=%d", rows, in, out), func(b *testing.B) {
			for b.Loop() {
				if err := nn.LinearForward(y, x, w, l.Bias, rows, in, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
