package parallel

import (
	"fmt"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

// llamaConfig turns the test model into the Llama family (GQA 4/2, RMSNorm,
// RoPE, SwiGLU, q/k/v biases, sliding window), keeping vocabulary and
// sequence length so the same data feeds it.
func llamaConfig(c *model.Config) {
	*c = model.Config{Family: model.FamilyLlama, ModelType: "qwen2", Vocab: c.Vocab, DModel: 32, Layers: 2, Heads: 4, KVHeads: 2,
		SeqLen: c.SeqLen, Intermediate: 56, TiedEmbeddings: true, LayerNormEps: 1e-6, RopeTheta: 1e4, AttnBias: true,
		SlidingWindow: 12, Attention: model.AttentionFlash}
}

// Data-parallel workers train a Llama-family model as one worker does.
func TestLlamaWorkersMatchOneWorker(t *testing.T) {
	cfg := testConfig(1, 10, 1)
	cfg.AdamW.Eps = compareEps
	ref := trainShared(t, cfg, 3, llamaConfig)
	for _, n := range []int{2, 3} {
		cfg.Workers = n
		got := trainShared(t, cfg, 3, llamaConfig)
		checkClose(t, fmt.Sprintf("workers=%d: weights after 3 steps", n), got.weights, ref.weights, weightRtol, weightAtol)
	}
	if !(ref.losses[2] < ref.losses[0]) {
		t.Errorf("losses %v do not fall", ref.losses)
	}
}

// ZeRO stages 0–3 (NewRank on an in-process group) train a Llama-family
// model to the same bits as the in-process workers, as they do GPT-2.
func TestLlamaZeROStagesMatchSharedWorkers(t *testing.T) {
	const steps, n = 2, 2
	cfg := testConfig(n, 10, 2)
	want := Hash(trainShared(t, cfg, steps, llamaConfig).weights)
	for stage := range 4 {
		c := cfg
		c.Stage = stage
		for r, w := range trainRanks(t, c, n, steps, llamaConfig) {
			if Hash(w) != want {
				t.Errorf("llama, stage %d: rank %d's weights differ from the in-process workers'", stage, r)
			}
		}
	}
}

// Exact mode keeps a Llama-family run bit-identical for any worker count.
func TestLlamaExactIsBitIdenticalForAnyWorkerCount(t *testing.T) {
	cfg := testConfig(1, 6, 2)
	cfg.Exact = true
	ref := Hash(trainShared(t, cfg, 2, llamaConfig).weights)
	for _, n := range []int{2, 3} {
		cfg.Workers = n
		if Hash(trainShared(t, cfg, 2, llamaConfig).weights) != ref {
			t.Errorf("llama, exact, workers=%d: weights differ from 1 worker", n)
		}
	}
}
