package nn

import (
	"fmt"
	"testing"

	"github.com/galleon-ml/galleon/internal/cputime"
	"github.com/galleon-ml/galleon/internal/kernels"
)

// Benchmarks of the Llama family's kernels at SmolLM2-135M's shapes: B·T =
// 4·256 = 1024 rows, hidden 576, MLP width 1536, head_dim 64 with 9 query
// and 3 key/value heads, vocabulary 49,152.
const (
	smolRows    = 1024
	smolC       = 576
	smolI       = 1536
	smolHeadDim = 64
	smolHeads   = 9
	smolKV      = 3
	smolV       = 49152
)

func BenchmarkRMSNorm(b *testing.B) {
	r := newRand(1)
	x, w, dy := randn32(r, smolRows*smolC, 1), randn32(r, smolC, 1), randn32(r, smolRows*smolC, 1)
	y, rstd, dx, dw := make([]float32, len(x)), make([]float32, smolRows), make([]float32, len(x)), make([]float32, smolC)
	b.Run("forward", func(b *testing.B) {
		b.SetBytes(int64(8 * len(x)))
		for range b.N {
			_ = RMSNormForward(y, rstd, x, w, smolC, 1e-5)
		}
	})
	b.Run("backward", func(b *testing.B) {
		b.SetBytes(int64(12 * len(x)))
		for range b.N {
			_ = RMSNormBackward(dx, dw, dy, x, w, rstd, smolC)
		}
	})
	// Same-run reference: LayerNorm at the same shape.
	mean, beta := make([]float32, smolRows), make([]float32, smolC)
	b.Run("layernorm-forward", func(b *testing.B) {
		b.SetBytes(int64(8 * len(x)))
		for range b.N {
			_ = LayerNormForward(y, mean, rstd, x, w, beta, smolC, 1e-5)
		}
	})
}

func BenchmarkSwiGLU(b *testing.B) {
	r := newRand(2)
	n := smolRows * smolI
	g, u, dy := randn32(r, n, 1), randn32(r, n, 1), randn32(r, n, 1)
	y, dg, du := make([]float32, n), make([]float32, n), make([]float32, n)
	b.Run("forward", func(b *testing.B) {
		b.SetBytes(int64(12 * n))
		for range b.N {
			_ = SwiGLUForward(y, g, u)
		}
	})
	b.Run("backward", func(b *testing.B) {
		b.SetBytes(int64(20 * n))
		for range b.N {
			_ = SwiGLUBackward(dg, du, dy, g, u)
		}
	})
	// Same-run reference: GELU (one exponential per element too).
	b.Run("gelu-forward", func(b *testing.B) {
		b.SetBytes(int64(8 * n))
		for range b.N {
			_ = GELUForward(y, g)
		}
	})
}

// BenchmarkRoPE rotates the q and k heads of packed [q | k | v] rows.
func BenchmarkRoPE(b *testing.B) {
	r := newRand(3)
	width := (smolHeads + 2*smolKV) * smolHeadDim
	heads := smolHeads + smolKV
	x, y := randn32(r, smolRows*width, 1), make([]float32, smolRows*width)
	pos := SequencePositions(4, smolRows/4, 0).Data
	inv, err := RopeFreqs(smolHeadDim, 1e5, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("forward", func(b *testing.B) {
		b.SetBytes(int64(8 * len(x)))
		for range b.N {
			_ = RopeForward(y, x, width, heads, smolHeadDim, pos, inv)
		}
	})
	b.Run("backward", func(b *testing.B) {
		b.SetBytes(int64(12 * len(x)))
		for range b.N {
			_ = RopeBackward(y, x, width, heads, smolHeadDim, pos, inv)
		}
	})
}

// BenchmarkLinearCrossEntropy times SmolLM2-135M's tied head and loss
// (1024 rows, D 576, V 49,152) fused and chunked, against the materialized
// path (all logits, CrossEntropyForward/Backward, LinearBackward) as the
// same-run reference. "train" computes the loss and both gradients.
func BenchmarkLinearCrossEntropy(b *testing.B) {
	r := newRand(4)
	x, w := randn32(r, smolRows*smolC, 1), randn32(r, smolV*smolC, 0.05)
	targets := randIDs(r, smolRows, smolV)
	dx, dw := make([]float32, len(x)), make([]float32, len(w))
	flops := 2.0 * smolRows * smolC * smolV
	b.Run("fused/eval", func(b *testing.B) {
		s := NewLinearCEScratch(0, smolV)
		for range b.N {
			if _, _, err := LinearCrossEntropyForward(s, x, w, targets, smolC, smolV, true); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("fused/train", func(b *testing.B) {
		s := NewLinearCEScratch(0, smolV)
		for range b.N {
			if _, _, err := LinearCrossEntropyBackward(s, dx, dw, x, w, targets, smolC, smolV, true, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(3*flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("materialized/train", func(b *testing.B) {
		logits, probs := make([]float32, smolRows*smolV), make([]float32, smolRows*smolV)
		for range b.N {
			if err := LinearForwardTransW(logits, x, w, nil, smolRows, smolC, smolV); err != nil {
				b.Fatal(err)
			}
			if _, _, err := CrossEntropyForward(probs, logits, targets, smolV); err != nil {
				b.Fatal(err)
			}
			clear(logits)
			if err := CrossEntropyBackward(logits, probs, targets, smolV, 1); err != nil {
				b.Fatal(err)
			}
			if err := LinearBackward(dx, dw, nil, logits, x, w, smolRows, smolC, smolV, true); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(3*flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}

// BenchmarkLinearCrossEntropyLlama3Vocab times the fused training form at
// Llama 3's vocabulary (128,256; 256 rows, D 576, W [D, V]), where the
// materialized logits of a B=8, T=1024 batch would take 4 GiB.
func BenchmarkLinearCrossEntropyLlama3Vocab(b *testing.B) {
	const rows, V = 256, 128256
	r := newRand(5)
	x, w := randn32(r, rows*smolC, 1), randn32(r, smolC*V, 0.05)
	targets := randIDs(r, rows, V)
	dx, dw := make([]float32, len(x)), make([]float32, len(w))
	s := NewLinearCEScratch(0, V)
	b.ResetTimer()
	for range b.N {
		if _, _, err := LinearCrossEntropyBackward(s, dx, dw, x, w, targets, smolC, V, false, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(3*2.0*rows*smolC*V*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkLinearCrossEntropyChunk times the fused training form at GPT-2
// 124M's tied head (1024 rows, D 768, V 50,257) with chunks of 256, 512
// and 1024 rows, the choice behind linearCEBudget. cpu-s/op is the
// process's CPU time per call, steadier than the wall time on a shared
// machine.
func BenchmarkLinearCrossEntropyChunk(b *testing.B) {
	const rows, D, V = 1024, 768, 50257
	r := newRand(6)
	x, w := randn32(r, rows*D, 1), randn32(r, V*D, 0.05)
	targets := randIDs(r, rows, V)
	dx, dw := make([]float32, len(x)), make([]float32, len(w))
	for _, chunk := range []int{256, 512, 1024} {
		b.Run(fmt.Sprintf("rows=%d", chunk), func(b *testing.B) {
			s := NewLinearCEScratch(chunk, V)
			c0 := cputime.Process()
			for range b.N {
				if _, _, err := LinearCrossEntropyBackward(s, dx, dw, x, w, targets, D, V, true, 1); err != nil {
					b.Fatal(err)
				}
			}
			if c := cputime.Process() - c0; c > 0 {
				b.ReportMetric(c.Seconds()/float64(b.N), "cpu-s/op")
			}
		})
	}
}

// BenchmarkLinearCEFrozenChunk times the training form of a frozen head
// (dx only, no dW product) at SmolLM2-135M's tied head (D 576, V 49,152),
// bfloat16 and float32, for B=1 and B=4 windows of 256 tokens, in chunks of
// the budgets LinearCEFrozenChunk could use: the choice behind
// linearCEFrozenBudget. cpu-s/op is the process's CPU time per call.
func BenchmarkLinearCEFrozenChunk(b *testing.B) {
	r := newRand(7)
	w := randn32(r, smolV*smolC, 0.05)
	w16 := make([]uint16, len(w))
	kernels.ToBF16(w16, w)
	for _, rows := range []int{256, 1024} {
		x := randn32(r, rows*smolC, 1)
		targets := randIDs(r, rows, smolV)
		dx := make([]float32, len(x))
		for _, mib := range []int{64, 32, 16, 8} {
			chunk := equalChunk(rows, max(16, (mib<<20)/4/smolV/16*16))
			for _, bf16 := range []bool{true, false} {
				b.Run(fmt.Sprintf("rows=%d/budget=%dMiB/bf16=%t", rows, mib, bf16), func(b *testing.B) {
					s := NewLinearCEScratch(chunk, smolV)
					c0 := cputime.Process()
					for range b.N {
						var err error
						if bf16 {
							_, _, err = LinearCrossEntropyBackwardBF16(s, dx, x, w16, targets, smolC, smolV, true, 1)
						} else {
							_, _, err = LinearCrossEntropyBackward(s, dx, nil, x, w, targets, smolC, smolV, true, 1)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					if c := cputime.Process() - c0; c > 0 {
						b.ReportMetric(c.Seconds()/float64(b.N), "cpu-s/op")
					}
					b.ReportMetric(float64(chunk), "rows/chunk")
				})
			}
		}
	}
}
