package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// refLlamaLogits is an independent float64 forward of one sequence through a
// Llama-family model, written from Hugging Face's modeling semantics
// (LlamaRMSNorm, rotate_half RoPE with inv_freq = θ^(−2i/d), repeat_kv GQA,
// causal mask with Mistral's window, SiLU-gated MLP), on galleon's [in, out]
// weights. It shares no code with the model's paths.
func refLlamaLogits(m *Model, ids []int32) [][]float64 {
	c := m.Config
	T, C, H, KV, D := len(ids), c.DModel, c.Heads, c.KVHeads, c.HeadDim()
	w := func(name string) []float32 { return m.Weights.Get(name).Data }
	has := func(name string) bool { return m.Weights.Get(name) != nil }
	linear := func(x []float64, name string, in, out int) []float64 {
		W := w(name + ".weight")
		y := make([]float64, out)
		if has(name + ".bias") {
			for j, b := range w(name + ".bias") {
				y[j] = float64(b)
			}
		}
		for i := 0; i < in; i++ {
			for j := 0; j < out; j++ {
				y[j] += x[i] * float64(W[i*out+j])
			}
		}
		return y
	}
	rms := func(x []float64, name string) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		s := 1 / math.Sqrt(ss/float64(len(x))+float64(c.LayerNormEps))
		g := w(name + ".weight")
		y := make([]float64, len(x))
		for i, v := range x {
			y[i] = v * s * float64(g[i])
		}
		return y
	}
	rope := func(x []float64, heads, pos int) {
		for h := 0; h < heads; h++ {
			v := x[h*D : (h+1)*D]
			rot := make([]float64, D)
			for i := 0; i < D/2; i++ {
				rot[i], rot[i+D/2] = -v[i+D/2], v[i]
			}
			for i := 0; i < D; i++ {
				f := 1 / math.Pow(c.RopeTheta, float64(2*(i%(D/2)))/float64(D))
				if c.RopeScaling != nil && c.RopeScaling.Type == "linear" {
					f /= c.RopeScaling.Factor
				}
				a := float64(pos) * f
				v[i] = v[i]*math.Cos(a) + rot[i]*math.Sin(a)
			}
		}
	}
	x := make([][]float64, T)
	emb := w(c.TokenEmbeddingName())
	for t, id := range ids {
		x[t] = make([]float64, C)
		for i := range x[t] {
			x[t][i] = float64(emb[int(id)*C+i])
		}
	}
	for l := 0; l < c.Layers; l++ {
		p := c.BlockPrefix(l) + "."
		q, k, v := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := range x {
			h := rms(x[t], p+"input_layernorm")
			q[t], k[t], v[t] = linear(h, p+"self_attn.q_proj", C, H*D), linear(h, p+"self_attn.k_proj", C, KV*D), linear(h, p+"self_attn.v_proj", C, KV*D)
			rope(q[t], H, t)
			rope(k[t], KV, t)
		}
		for t := range x {
			att := make([]float64, H*D)
			for h := 0; h < H; h++ {
				kh := h / (H / KV)
				lo := 0
				if c.SlidingWindow > 0 {
					lo = max(0, t-c.SlidingWindow+1)
				}
				scores := make([]float64, t+1)
				mx := math.Inf(-1)
				for s := lo; s <= t; s++ {
					var d float64
					for i := 0; i < D; i++ {
						d += q[t][h*D+i] * k[s][kh*D+i]
					}
					scores[s] = d / math.Sqrt(float64(D))
					mx = math.Max(mx, scores[s])
				}
				var sum float64
				for s := lo; s <= t; s++ {
					scores[s] = math.Exp(scores[s] - mx)
					sum += scores[s]
				}
				for s := lo; s <= t; s++ {
					for i := 0; i < D; i++ {
						att[h*D+i] += scores[s] / sum * v[s][kh*D+i]
					}
				}
			}
			o := linear(att, p+"self_attn.o_proj", H*D, C)
			for i := range o {
				x[t][i] += o[i]
			}
		}
		I := c.MLPWidth()
		for t := range x {
			h := rms(x[t], p+"post_attention_layernorm")
			g, u := linear(h, p+"mlp.gate_proj", C, I), linear(h, p+"mlp.up_proj", C, I)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			d := linear(g, p+"mlp.down_proj", I, C)
			for i := range d {
				x[t][i] += d[i]
			}
		}
	}
	logits := make([][]float64, T)
	for t := range x {
		h := rms(x[t], NameFinalNorm)
		if c.TiedEmbeddings {
			logits[t] = make([]float64, c.Vocab)
			for j := range logits[t] {
				for i := 0; i < C; i++ {
					logits[t][j] += h[i] * float64(emb[j*C+i])
				}
			}
		} else {
			logits[t] = linear(h, NameHead, C, c.Vocab)
		}
	}
	return logits
}

// The Llama family's logits follow Hugging Face's semantics, checked
// against the float64 reference on each variant.
func TestLlamaMatchesFloat64Reference(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"llama":          nil,
		"smollm-tied":    func(c *Config) { c.TiedEmbeddings, c.RopeTheta = true, 1e5 },
		"qwen2-bias":     func(c *Config) { c.ModelType, c.AttnBias = "qwen2", true },
		"mistral-window": func(c *Config) { c.ModelType, c.SlidingWindow = "mistral", 5 },
		"linear-scaling": func(c *Config) { c.RopeScaling = &RopeScaling{Type: "linear", Factor: 2.5} },
	} {
		t.Run(name, func(t *testing.T) {
			m := testModel(t, func(c *Config) {
				*c = tinyLlama()
				if mut != nil {
					mut(c)
				}
			})
			const T = 23
			ids := randIDs(rand.New(rand.NewPCG(3, 4)), T)
			got, err := m.Logits(ids, 1, T)
			if err != nil {
				t.Fatal(err)
			}
			want := refLlamaLogits(m, ids)
			V := m.Config.Vocab
			for i := range want {
				for j, w := range want[i] {
					if d := math.Abs(float64(got[i*V+j]) - w); d > 1e-4*(1+math.Abs(w)) {
						t.Fatalf("position %d token %d: %v, reference %v", i, j, got[i*V+j], w)
					}
				}
			}
		})
	}
}
