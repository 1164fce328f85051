package quant

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

// Quantize, Save/Load and Generate on a trained Llama-family model (RMSNorm,
// RoPE, SwiGLU, GQA, untied head): its seven projections per block and the
// head run on the int8 GEMM, the token embedding is stored per row.
func TestQuantizeLlama(t *testing.T) {
	cfg := model.Config{Family: model.FamilyLlama, ModelType: "llama", Vocab: 256, DModel: 64, Layers: 2, Heads: 4, KVHeads: 2,
		SeqLen: 32, Intermediate: 96, LayerNormEps: 1e-5, RopeTheta: 1e4, Attention: model.AttentionFlash}
	m, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, data := testModel(t, 0)
	train(t, m, data, 30)
	in, tg := windows(t, data, 4, cfg.SeqLen)
	ref, err := m.Logits(in, 4, cfg.SeqLen)
	if err != nil {
		t.Fatal(err)
	}
	q, err := Quantize(m, Config{Act: ActDynamic, Threshold: DefaultThreshold, Embeddings: true, Head: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Linears) != 2*7+1 {
		t.Errorf("%d int8 layers, want 15", len(q.Linears))
	}
	got, err := q.Logits(in, 4, cfg.SeqLen)
	if err != nil {
		t.Fatal(err)
	}
	d, s := maxAbsDiff(ref, got)
	if d > 0.1*s {
		t.Fatalf("int8 logits differ by %v (scale %v)", d, s)
	}
	if _, err := q.Evaluate(in, tg, cfg.SeqLen, 2); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "llama-int8.safetensors")
	if err := q.Save(path); err != nil {
		t.Fatal(err)
	}
	l, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Logits(in, 4, cfg.SeqLen)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != again[i] {
			t.Fatalf("loaded model's logit %d = %v, want %v", i, again[i], got[i])
		}
	}
	out, err := q.Generate(context.Background(), model.Encode("ab"), 40, model.SampleOptions{})
	if err != nil || len(out) != 40 {
		t.Fatalf("generate: %v, %d tokens", err, len(out))
	}
}
