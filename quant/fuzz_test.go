package quant

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

// FuzzLoad feeds mutated int8 checkpoints to Load: it may fail, never panic.
func FuzzLoad(f *testing.F) {
	p, err := model.LookupPreset("tiny")
	if err != nil {
		f.Fatal(err)
	}
	cfg := p.Config
	cfg.Layers, cfg.DModel, cfg.Heads, cfg.KVHeads, cfg.SeqLen = 1, 32, 2, 2, 8
	m, err := model.New(cfg, 1)
	if err != nil {
		f.Fatal(err)
	}
	q, err := Quantize(m, Config{Act: ActDynamic, Embeddings: true})
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	if err := q.Save(good); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "x.safetensors")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if l, err := Load(path); err == nil {
			if _, err := l.Logits([]int32{1, 2}, 1, 2); err != nil {
				t.Logf("loaded model fails to run: %v", err)
			}
		}
	})
}
