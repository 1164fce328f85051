package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// gradCheckpointCases are the configurations both graphs are compared on:
// GPT-2 and the Llama family (GQA, biases, a sliding window, naive
// attention), with residual dropout so that the recomputed masks matter;
// TestGradCheckpointingEqual adds the Llama case in bfloat16 precision.
func gradCheckpointCases(t *testing.T) map[string]*Model {
	t.Helper()
	llama := func(mut func(*Config)) *Model {
		c := tinyLlama()
		c.Layers = 3
		c.Dropout = 0.1
		if mut != nil {
			mut(&c)
		}
		m, err := New(c, 7)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return map[string]*Model{
		"gpt2": testModel(t, func(c *Config) { c.Dropout = 0.1; c.Layers = 3 }),
		"gpt2-naive-untied": testModel(t, func(c *Config) {
			c.Attention = AttentionNaive
			c.TiedEmbeddings = false
		}),
		"llama":          llama(nil),
		"qwen2-biases":   llama(func(c *Config) { c.ModelType = "qwen2"; c.AttnBias = true; c.MLPBias = true }),
		"mistral-window": llama(func(c *Config) { c.ModelType = "mistral"; c.SlidingWindow = 5; c.TiedEmbeddings = true }),
	}
}

// A checkpointed replica gives the loss and the gradients of the plain
// one bit for bit, over several micro-batches accumulated with weights
// (dropout masks drawn at each micro-batch's step and row offset).
func TestGradCheckpointingEqual(t *testing.T) {
	cases := gradCheckpointCases(t)
	cases["llama-bf16"] = cases["llama"]
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			const B, T = 3, 11
			var prec Precision
			if strings.HasSuffix(name, "-bf16") {
				prec = PrecisionBF16
			}
			plain, err := m.NewReplicaWith(B, T, ReplicaOptions{Precision: prec})
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			ck, err := m.NewReplicaWith(B, T, ReplicaOptions{GradCheckpointing: true, Precision: prec})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			r := rand.New(rand.NewPCG(1, 2))
			for k := range 3 {
				in, tg := randIDs(r, B*T), randIDs(r, B*T)
				for i := range tg {
					in[i] %= int32(m.Config.Vocab)
					tg[i] %= int32(m.Config.Vocab)
				}
				tg[4] = -1 // an ignored target
				var losses [2]float32
				for j, rep := range []*Replica{plain, ck} {
					rep.Dropout.Step, rep.Dropout.Row0 = uint64(10+k), uint64(3*k)
					if losses[j], err = rep.ForwardBackward(in, tg, 0.25+float32(k)); err != nil {
						t.Fatal(err)
					}
				}
				if math.Float32bits(losses[0]) != math.Float32bits(losses[1]) {
					t.Fatalf("micro-batch %d: loss %v with checkpointing, %v without", k, losses[1], losses[0])
				}
				if i := firstDiff(plain.Grad, ck.Grad); i >= 0 {
					t.Fatalf("micro-batch %d: gradient %d (%s) is %v with checkpointing, %v without",
						k, i, paramAt(m.Trainable(), i), ck.Grad[i], plain.Grad[i])
				}
			}
			if slices.Max(ck.Grad) == 0 && slices.Min(ck.Grad) == 0 {
				t.Fatal("all gradients are zero")
			}
		})
	}
}

// firstDiff returns the first index where a and b differ in bits, or -1.
func firstDiff(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// paramAt names the parameter holding element i of ps.
func paramAt(ps *ParamSet, i int) string {
	for _, p := range ps.Params {
		if i >= p.Offset && i < p.Offset+p.Size() {
			return p.Name
		}
	}
	return "?"
}

// Trainer steps with and without checkpointing (accumulation, clipping,
// dropout) leave the same weights, bit for bit.
func TestGradCheckpointingTrainerSameWeights(t *testing.T) {
	cfg := testTrainConfig()
	cfg.Accum = 2
	lossA, wA := trainRun(t, cfg, 3, 9)
	cfg.GradCheckpointing = true
	lossB, wB := trainRun(t, cfg, 3, 9)
	if !slices.Equal(lossA, lossB) {
		t.Fatalf("losses %v with checkpointing, %v without", lossB, lossA)
	}
	if i := firstDiff(wA, wB); i >= 0 {
		t.Fatalf("weight %d is %v with checkpointing, %v without", i, wB[i], wA[i])
	}
}

// A non-finite loss leaves the gradient buffer as it was, as without
// checkpointing.
func TestGradCheckpointingNonFiniteLoss(t *testing.T) {
	m := testModel(t, nil)
	rep, err := m.NewReplicaWith(2, 8, ReplicaOptions{GradCheckpointing: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	in := make([]int32, 16)
	m.Weights.Get("transformer.h.1.ln_2.weight").Data[0] = float32(math.Inf(1))
	if _, err := rep.ForwardBackward(in, in, 1); err == nil {
		t.Fatal("no error for an infinite weight")
	}
	for i, g := range rep.Grad {
		if g != 0 {
			t.Fatalf("gradient %d is %v after a failed micro-batch", i, g)
		}
	}
}
