package quant

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
)

// testModel returns a tiny model trained a few steps on a synthetic corpus
// (so its weights are not just the initialization) and that corpus.
func testModel(t *testing.T, steps int) (*model.Model, []byte) {
	t.Helper()
	p, err := model.LookupPreset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.Config
	cfg.Layers = 1
	cfg.SeqLen = 32
	m, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	data := make([]byte, 1<<14)
	for i := range data {
		// A little structure: mostly lowercase letters and spaces.
		data[i] = byte('a' + rng.IntN(8))
		if i%7 == 0 {
			data[i] = ' '
		}
	}
	if steps > 0 {
		train(t, m, data, steps)
	}
	return m, data
}

func train(t *testing.T, m *model.Model, data []byte, steps int) {
	t.Helper()
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: 4, Schedule: model.Schedule{Peak: 3e-3, Warmup: 2}, AdamW: model.DefaultAdamW()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s, err := model.NewSampler(data, m.Config.SeqLen, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < steps; i++ {
		if _, err := tr.Step(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
}

func windows(t *testing.T, data []byte, n, T int) ([]int32, []int32) {
	t.Helper()
	in, tg, err := model.ValidationWindows(data, n, T, 3)
	if err != nil {
		t.Fatal(err)
	}
	return in, tg
}

func maxAbsDiff(a, b []float32) (d, scale float64) {
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
		scale = max(scale, math.Abs(float64(a[i])))
	}
	return d, scale
}

func TestQuantizeModelAndCheckpoint(t *testing.T) {
	m, data := testModel(t, 5)
	T := m.Config.SeqLen
	in, tg := windows(t, data, 4, T)
	ref, err := m.Logits(in, 4, T)
	if err != nil {
		t.Fatal(err)
	}
	before := append([]float32(nil), m.Weights.Data...)
	scales, err := Calibrate(m, in, T, 2, nil, func() Observer { return &MinMax{} })
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if m.Weights.Data[i] != before[i] {
			t.Fatal("Calibrate changed the model")
		}
	}
	dir := t.TempDir()
	fp32 := filepath.Join(dir, "fp32.safetensors")
	if err := m.Save(fp32); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{Act: ActFloat},
		{Act: ActDynamic},
		{Act: ActDynamic, Threshold: DefaultThreshold, Embeddings: true},
		{Act: ActStatic, ActScales: scales, Embeddings: true},
	} {
		q, err := Quantize(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := q.Logits(in, 4, T)
		if err != nil {
			t.Fatal(err)
		}
		d, s := maxAbsDiff(ref, got)
		t.Logf("%+v: max |Δlogit| = %.3g (max |logit| %.3g)", cfg.Act, d, s)
		if d > 0.1*s {
			t.Fatalf("%v: int8 logits differ by %v (scale %v)", cfg.Act, d, s)
		}
		if _, err := q.Evaluate(in, tg, T, 2); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "int8.safetensors")
		if err := q.Save(path); err != nil {
			t.Fatal(err)
		}
		l, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		again, err := l.Logits(in, 4, T)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != again[i] {
				t.Fatalf("%v: loaded model's logit %d = %v, want %v", cfg.Act, i, again[i], got[i])
			}
		}
		if cfg.Embeddings {
			a, _ := os.Stat(fp32)
			b, _ := os.Stat(path)
			ratio := float64(b.Size()) / float64(a.Size())
			t.Logf("checkpoint %d bytes vs %d float32: %.3f", b.Size(), a.Size(), ratio)
			if ratio > 0.27 {
				t.Fatalf("int8 checkpoint is %.3f of the float32 one", ratio)
			}
		}
	}
	// Generation runs on the int8 model.
	q, err := Quantize(m, Config{Act: ActDynamic})
	if err != nil {
		t.Fatal(err)
	}
	out, err := q.Generate(context.Background(), model.Encode("ab"), 8, model.SampleOptions{})
	if err != nil || len(out) == 0 {
		t.Fatalf("generate: %v, %d tokens", err, len(out))
	}
}

// savedQuantized quantizes the test model under c and saves it as
// dir/good.safetensors, returning the directory, the path and the parsed
// file, for tests that write damaged variants of it.
func savedQuantized(t *testing.T, c Config) (dir, good string, f *safetensors.File) {
	t.Helper()
	m, _ := testModel(t, 0)
	q, err := Quantize(m, c)
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	good = filepath.Join(dir, "good.safetensors")
	if err := q.Save(good); err != nil {
		t.Fatal(err)
	}
	if f, err = safetensors.ReadFile(good); err != nil {
		t.Fatal(err)
	}
	return dir, good, f
}

// TestLoadHostile writes damaged int8 checkpoints: each must fail with
// ErrCheckpoint, none may panic.
func TestLoadHostile(t *testing.T) {
	dir, good, f := savedQuantized(t, Config{Act: ActDynamic, Embeddings: true})
	w := "transformer.h.0.attn.c_attn.weight"
	edit := func(name string, change func(ts []safetensors.Tensor, meta map[string]string) []safetensors.Tensor) {
		t.Run(name, func(t *testing.T) {
			ts := make([]safetensors.Tensor, len(f.Tensors))
			for i, x := range f.Tensors {
				x.Data = append([]byte(nil), x.Data...)
				x.Shape = append([]int64(nil), x.Shape...)
				ts[i] = x
			}
			meta := map[string]string{}
			for k, v := range f.Metadata {
				meta[k] = v
			}
			ts = change(ts, meta)
			p := filepath.Join(dir, name+".safetensors")
			if err := safetensors.WriteFile(p, ts, meta); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(p); !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("err = %v, want ErrCheckpoint", err)
			} else if name == "huge-scale" && !strings.Contains(err.Error(), w) {
				t.Fatalf("err = %v, want it to name %s", err, w)
			}
		})
	}
	find := func(ts []safetensors.Tensor, name string) int {
		for i := range ts {
			if ts[i].Name == name {
				return i
			}
		}
		t.Fatalf("no tensor %q", name)
		return -1
	}
	edit("int8-128", func(ts []safetensors.Tensor, _ map[string]string) []safetensors.Tensor {
		ts[find(ts, w)].Data[3] = 0x80
		return ts
	})
	edit("nan-scale", func(ts []safetensors.Tensor, _ map[string]string) []safetensors.Tensor {
		d := ts[find(ts, w+"_scale")].Data
		d[0], d[1], d[2], d[3] = 0, 0, 0xc0, 0x7f
		return ts
	})
	// 3e38 is finite, but 127 steps of it are not: it would dequantize
	// to Inf.
	edit("huge-scale", func(ts []safetensors.Tensor, _ map[string]string) []safetensors.Tensor {
		binary.LittleEndian.PutUint32(ts[find(ts, w+"_scale")].Data, math.Float32bits(3e38))
		return ts
	})
	edit("missing", func(ts []safetensors.Tensor, _ map[string]string) []safetensors.Tensor {
		i := find(ts, w+"_scale")
		return append(ts[:i], ts[i+1:]...)
	})
	edit("extra", func(ts []safetensors.Tensor, _ map[string]string) []safetensors.Tensor {
		return append(ts, safetensors.F32Tensor("evil", []int64{1}, []float32{1}))
	})
	edit("dtype", func(ts []safetensors.Tensor, _ map[string]string) []safetensors.Tensor {
		i := find(ts, w)
		ts[i] = safetensors.U8Tensor(w, ts[i].Shape, ts[i].Data)
		return ts
	})
	edit("shape", func(ts []safetensors.Tensor, _ map[string]string) []safetensors.Tensor {
		i := find(ts, w)
		ts[i].Shape[0], ts[i].Shape[1] = ts[i].Shape[1], ts[i].Shape[0]
		return ts
	})
	edit("huge-config", func(ts []safetensors.Tensor, meta map[string]string) []safetensors.Tensor {
		meta[metaConfig] = `{"vocab_size":256,"n_embd":65536,"n_layer":1000,"n_head":8,"n_kv_head":8,"n_positions":64,"mlp_ratio":4,"tie_word_embeddings":true,"layer_norm_epsilon":1e-5,"attention":"flash"}`
		return ts
	})
	edit("format", func(ts []safetensors.Tensor, meta map[string]string) []safetensors.Tensor {
		meta[metaFormat] = "galleon"
		return ts
	})
	edit("act-mode", func(ts []safetensors.Tensor, meta map[string]string) []safetensors.Tensor {
		meta[metaQuant] = `{"act":7}`
		return ts
	})
	// Truncation is caught by the safetensors reader.
	b, _ := os.ReadFile(good)
	p := filepath.Join(dir, "trunc.safetensors")
	os.WriteFile(p, b[:len(b)-100], 0o644)
	if _, err := Load(p); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("truncated: err = %v", err)
	}
}

// TestInt8LinearGraph checks the training graph of an int8 model (as an
// adapter trained on an int8 base uses it): its loss equals the inference
// path's for weight-only int8, where both multiply the dequantized weights.
func TestInt8LinearGraph(t *testing.T) {
	m, data := testModel(t, 2)
	T := m.Config.SeqLen
	in, tg := windows(t, data, 2, T)
	q, err := Quantize(m, Config{Act: ActFloat})
	if err != nil {
		t.Fatal(err)
	}
	r, err := q.NewReplica(2, T)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	loss, err := r.ForwardBackward(in, tg, 1)
	if err != nil {
		t.Fatal(err)
	}
	want, err := q.Loss(in, tg, 2, T)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(loss)-want) > 1e-4 {
		t.Fatalf("graph loss %v, inference loss %v", loss, want)
	}
}

// TestReleaseQuantized: an int8 model frees the float32 copies of its
// quantized layers (model.Model.ReleaseReplaced) and computes the same
// logits; its checkpoint still round-trips, and quantizing it again is
// refused instead of reading parameters that are gone.
func TestReleaseQuantized(t *testing.T) {
	m, data := testModel(t, 2)
	T := m.Config.SeqLen
	in, _ := windows(t, data, 2, T)
	dir := t.TempDir()
	for _, cfg := range []Config{{Act: ActFloat}, {Act: ActDynamic, Embeddings: true}} {
		q, err := Quantize(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		want, err := q.Logits(in, 2, T)
		if err != nil {
			t.Fatal(err)
		}
		var linear int64
		for name, l := range q.Linears {
			linear += 4 * int64(l.In*l.Out)
			if q.Weights.Get(name+".bias") != nil {
				linear += 4 * int64(l.Out)
			}
		}
		freed, err := q.ReleaseReplaced()
		if err != nil {
			t.Fatal(err)
		}
		if freed != linear {
			t.Errorf("%v: freed %d bytes, want the linears' %d", cfg.Act, freed, linear)
		}
		got, err := q.Logits(in, 2, T)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := maxAbsDiff(want, got); d != 0 {
			t.Errorf("%v: logits moved by %g after the release", cfg.Act, d)
		}
		path := filepath.Join(dir, "released.safetensors")
		if err := q.Save(path); err != nil {
			t.Fatal(err)
		}
		l, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		again, err := l.Logits(in, 2, T)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := maxAbsDiff(want, again); d != 0 {
			t.Errorf("%v: the reloaded released model's logits differ by %g", cfg.Act, d)
		}
		if _, err := Quantize(q.Model, cfg); !errors.Is(err, ErrInput) {
			t.Errorf("quantizing a released model: %v, want ErrInput", err)
		}
	}
}
