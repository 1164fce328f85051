package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// testModel returns a small model with random weights (biases and LayerNorm
// parameters too, so that every path carries signal) and odd sizes.
func testModel(t *testing.T, mut func(*Config)) *Model {
	t.Helper()
	cfg := Config{Vocab: 256, DModel: 48, Layers: 2, Heads: 4, KVHeads: 4, SeqLen: 37, MLPRatio: 4,
		TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: AttentionFlash}
	if mut != nil {
		mut(&cfg)
	}
	m, err := New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := range m.Weights.Data {
		m.Weights.Data[i] += float32(r.NormFloat64() * 0.05)
	}
	return m
}

func randIDs(r *rand.Rand, n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(r.IntN(256))
	}
	return ids
}

func maxAbsDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// The inference path (no graph, KV cache) must compute the training graph's
// logits: prefill in one call, token by token, and in uneven chunks.
func TestInferenceMatchesGraph(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
	}{
		{"flash", nil},
		{"naive", func(c *Config) { c.Attention = AttentionNaive }},
		{"gqa", func(c *Config) { c.KVHeads = 2 }},
		{"untied", func(c *Config) { c.TiedEmbeddings = false }},
		// The Llama family (tinyLlama: GQA 5/1, head_dim 6 ≠ d_model/heads,
		// MLP 44, untied) with each variant's own pieces.
		{"llama", func(c *Config) { *c = tinyLlama() }},
		{"llama-naive", func(c *Config) { *c = tinyLlama(); c.Attention = AttentionNaive }},
		{"smollm-tied", func(c *Config) { *c = tinyLlama(); c.TiedEmbeddings, c.RopeTheta = true, 1e5 }},
		{"qwen2-bias", func(c *Config) { *c = tinyLlama(); c.ModelType, c.AttnBias = "qwen2", true }},
		{"llama-biases", func(c *Config) { *c = tinyLlama(); c.AttnBias, c.AttnOutBias, c.MLPBias = true, true, true }},
		{"mistral-window", func(c *Config) { *c = tinyLlama(); c.ModelType, c.SlidingWindow = "mistral", 6 }},
		{"llama3-scaling", func(c *Config) {
			*c = tinyLlama()
			c.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 16}
		}},
		{"linear-scaling", func(c *Config) { *c = tinyLlama(); c.RopeScaling = &RopeScaling{Type: "linear", Factor: 2} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testModel(t, tc.mut)
			const B, T = 3, 37
			r := rand.New(rand.NewPCG(7, 8))
			in, tg := randIDs(r, B*T), randIDs(r, B*T)
			rep, err := m.NewReplica(B, T)
			if err != nil {
				t.Fatal(err)
			}
			defer rep.Close()
			graphLoss, err := rep.ForwardBackward(in, tg, 1)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]float32(nil), rep.Logits()...)

			full, err := m.Logits(in, B, T)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(full, want); d > 1e-4 {
				t.Errorf("prefill logits differ from the graph's by %g", d)
			}
			loss, err := m.Loss(in, tg, B, T)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(loss-float64(graphLoss)) > 1e-5 {
				t.Errorf("inference loss %v, graph loss %v", loss, graphLoss)
			}
			// The evaluation loss fuses head and loss by chunks of rows:
			// 7-row chunks (the last one short) give the same loss.
			chunked, err := m.loss(in, tg, B, T, 7)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(chunked-loss) > 1e-6*loss {
				t.Errorf("loss in 7-row chunks %v, in one %v", chunked, loss)
			}

			// Incremental: chunks of 1, 5, 20 and the rest.
			inf, err := m.NewInference(B, T)
			if err != nil {
				t.Fatal(err)
			}
			pos := 0
			for _, n := range []int{1, 5, 20, T - 26} {
				chunk := make([]int32, 0, B*n)
				for b := 0; b < B; b++ {
					chunk = append(chunk, in[b*T+pos:b*T+pos+n]...)
				}
				logits, err := inf.Forward(chunk, n)
				if err != nil {
					t.Fatal(err)
				}
				V := m.Config.Vocab
				for b := 0; b < B; b++ {
					got := logits[b*n*V : (b+1)*n*V]
					ref := want[(b*T+pos)*V : (b*T+pos+n)*V]
					if d := maxAbsDiff(got, ref); d > 1e-4 {
						t.Fatalf("chunk of %d at %d, sequence %d: logits differ by %g", n, pos, b, d)
					}
				}
				pos += n
			}
			if _, err := inf.Forward(in[:B], 1); err == nil {
				t.Error("forward past the capacity accepted")
			}
		})
	}
}

func TestInferenceBadInput(t *testing.T) {
	m := testModel(t, nil)
	if _, err := m.NewInference(1, m.Config.SeqLen+1); err == nil {
		t.Error("capacity beyond the positions accepted")
	}
	inf, _ := m.NewInference(2, 8)
	if _, err := inf.Forward([]int32{1, 2, 3}, 2); err == nil {
		t.Error("wrong number of ids accepted")
	}
	if _, err := inf.Forward([]int32{1, 300}, 1); err == nil {
		t.Error("id outside the vocabulary accepted")
	}
}

// After its first use, a session's own buffers are reused and the attention
// kernels take their per-call bookkeeping from pools: neither a prefill nor
// a decoding step allocates, at any context length (nothing grows with the
// cache).
func TestInferenceDecodeAllocationsDoNotGrow(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates inside synchronization")
	}
	m := testModel(t, nil)
	inf, err := m.NewInference(2, 37)
	if err != nil {
		t.Fatal(err)
	}
	prompt := randIDs(rand.New(rand.NewPCG(1, 2)), 2*30)
	next := []int32{7, 9}
	allocsAt := func(context int) float64 {
		return testing.AllocsPerRun(10, func() {
			inf.Reset()
			if _, err := inf.Forward(prompt[:2*context], context); err != nil {
				t.Fatal(err)
			}
			before := inf.Len
			if _, err := inf.Forward(next, 1); err != nil || inf.Len != before+1 {
				t.Fatal(err)
			}
		})
	}
	short, long := allocsAt(4), allocsAt(30) // decode path vs flash-forward prefill
	perLayer := long / float64(m.Config.Layers)
	// None measured (13 per layer before the attention kernels pooled their
	// call set-up); one per layer anywhere in the path fails here.
	if perLayer > 0 {
		t.Errorf("%v allocations per layer for prefill + decode", perLayer)
	}
	if at12 := allocsAt(12); at12 > short {
		t.Errorf("allocations grow with the context: %v at 4 tokens, %v at 12", short, at12)
	}
}
