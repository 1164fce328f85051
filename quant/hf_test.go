package quant

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
	"github.com/stretchr/testify/require"
)

// hfCase is a random Hugging Face directory of one family.
type hfCase struct {
	name  string
	cfg   model.Config
	dtype string
	head  bool // quantize the (untied) head
}

func hfCases() []hfCase {
	llama := model.Config{Family: model.FamilyLlama, ModelType: "llama", Vocab: 53, DModel: 48, Layers: 2, Heads: 6, KVHeads: 2,
		SeqLen: 32, Intermediate: 40, LayerNormEps: 1e-5, RopeTheta: 10000, Attention: model.AttentionFlash}
	qwen := llama
	qwen.ModelType, qwen.Heads, qwen.KVHeads, qwen.AttnBias, qwen.TiedEmbeddings = "qwen2", 4, 2, true, true
	gpt := model.Config{Family: model.FamilyGPT2, ModelType: "gpt2", Vocab: 61, DModel: 24, Layers: 2, Heads: 3, KVHeads: 3,
		SeqLen: 16, MLPRatio: 4, TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: model.AttentionFlash}
	return []hfCase{
		{"llama-bf16-int8-head", llama, "bfloat16", true},
		{"llama-f16-float-head", llama, "float16", false},
		{"qwen2-bias-tied", qwen, "float32", false},
		{"gpt2-conv1d", gpt, "bfloat16", false},
	}
}

// writeHF writes c's random model as a Hugging Face directory with a
// tokenizer file beside it, and returns the model as loaded back (float32).
func writeHF(t *testing.T, c hfCase, dir string) *model.Model {
	t.Helper()
	m, err := model.New(c.cfg, 5)
	require.NoError(t, err)
	for _, p := range m.Weights.Params {
		if len(p.Shape) == 1 { // biases and gains matter too
			for i := range p.Data {
				p.Data[i] += float32(i%7) * 0.01
			}
		}
	}
	require.NoError(t, m.SavePretrained(dir, model.WithDType(c.dtype)))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model":{"type":"BPE"}}`), 0o644))
	f, err := model.LoadPretrained(dir)
	require.NoError(t, err)
	return f
}

// LoadPretrained streams a float directory into exactly the int8 model that
// Quantize makes of the float model, without the float32 linear weights;
// SavePretrained and LoadPretrained of the int8 directory give it back bit
// for bit.
func TestLoadPretrainedInt8(t *testing.T) {
	for _, c := range hfCases() {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "hf")
			fm := writeHF(t, c, dir)
			cfg := DefaultConfig()
			cfg.Head = c.head
			want, err := Quantize(fm, cfg)
			require.NoError(t, err)
			q, err := LoadPretrained(dir, cfg)
			require.NoError(t, err)
			require.Equal(t, len(want.Linears), len(q.Linears))
			require.Equal(t, c.head, q.Config.Head)
			for name, l := range want.Linears {
				require.Equal(t, l.Weight.Data, q.Linears[name].Weight.Data, name)
				require.Equal(t, l.Weight.Scale, q.Linears[name].Weight.Scale, name)
				require.Equal(t, l.Bias, q.Linears[name].Bias, name)
			}
			// Only embeddings, norms and float layers hold float32.
			var float int
			for _, p := range fm.Weights.Params {
				module, _ := strings.CutSuffix(p.Name, ".weight")
				module, _ = strings.CutSuffix(module, ".bias")
				if q.Linears[module] == nil {
					float += len(p.Data)
				}
			}
			require.Equal(t, float, q.Model.Weights.Len())

			ids := []int32{1, 2, 3, 4, 5, 6, 7, 8}
			wl, err := want.Logits(ids, 2, 4)
			require.NoError(t, err)
			gl, err := q.Logits(ids, 2, 4)
			require.NoError(t, err)
			require.Equal(t, wl, gl)

			out := filepath.Join(t.TempDir(), "int8")
			require.NoError(t, q.SavePretrained(out, dir))
			require.True(t, IsInt8Dir(out))
			for _, name := range []string{"config.json", "tokenizer.json"} {
				a, _ := os.ReadFile(filepath.Join(dir, name))
				b, err := os.ReadFile(filepath.Join(out, name))
				require.NoError(t, err)
				require.Equal(t, a, b, name)
			}
			_, err = os.Stat(filepath.Join(out, "model.safetensors"))
			require.True(t, os.IsNotExist(err), "an int8 directory must not look like a float one")
			back, err := LoadPretrained(out, cfg)
			require.NoError(t, err)
			require.Equal(t, q.Config.Layers, back.Config.Layers)
			bl, err := back.Logits(ids, 2, 4)
			require.NoError(t, err)
			require.Equal(t, gl, bl)
			// A float loader refuses the int8 directory.
			_, err = model.LoadPretrained(out)
			require.Error(t, err)
		})
	}
}

// rewriteInt8 rewrites dir's int8 weights file with edit applied to its
// tensors.
func rewriteInt8(t *testing.T, dir string, edit func(ts []safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	path := filepath.Join(dir, Int8WeightsFile)
	f, err := safetensors.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, safetensors.WriteFile(path, edit(f.Tensors), f.Metadata))
}

// Hostile int8 directories and float directories are refused with an error
// naming the tensor: non-finite values, a scale whose 127 steps overflow
// (3e38), a zero scale, −128, a missing scale, an unexpected tensor.
func TestLoadPretrainedInt8Hostile(t *testing.T) {
	c := hfCases()[0]
	src := filepath.Join(t.TempDir(), "hf")
	writeHF(t, c, src)
	cfg := DefaultConfig()
	cfg.Head = true
	q, err := LoadPretrained(src, cfg)
	require.NoError(t, err)
	good := filepath.Join(t.TempDir(), "int8")
	require.NoError(t, q.SavePretrained(good, src))
	const w = "model.layers.1.self_attn.k_proj.weight"
	setF32 := func(name string, v float32) func([]safetensors.Tensor) []safetensors.Tensor {
		return func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == name {
					ts[i].Data = bytes.Clone(ts[i].Data)
					binary.LittleEndian.PutUint32(ts[i].Data[4:], math.Float32bits(v))
				}
			}
			return ts
		}
	}
	cases := []struct {
		name, want string
		edit       func([]safetensors.Tensor) []safetensors.Tensor
	}{
		{"scale 3e38", w + "_scale", setF32(w+"_scale", 3e38)},
		{"scale 0", w + "_scale", setF32(w+"_scale", 0)},
		{"scale NaN", w + "_scale", setF32(w+"_scale", float32(math.NaN()))},
		{"norm Inf", "model.norm.weight", setF32("model.norm.weight", float32(math.Inf(1)))},
		{"int8 -128", w, func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == w {
					ts[i].Data = bytes.Clone(ts[i].Data)
					ts[i].Data[3] = 0x80
				}
			}
			return ts
		}},
		{"missing scale", w + "_scale", func(ts []safetensors.Tensor) []safetensors.Tensor {
			var out []safetensors.Tensor
			for _, t := range ts {
				if t.Name != w+"_scale" {
					out = append(out, t)
				}
			}
			return out
		}},
		{"unexpected", "extra.weight", func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.F32Tensor("extra.weight", []int64{1}, []float32{1}))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "int8")
			require.NoError(t, os.CopyFS(d, os.DirFS(good)))
			rewriteInt8(t, d, tc.edit)
			_, err := LoadPretrained(d, cfg)
			require.ErrorContains(t, err, tc.want)
			t.Log(err)
		})
	}
	t.Run("float NaN", func(t *testing.T) {
		m, err := model.LoadPretrained(src)
		require.NoError(t, err)
		m.Weights.Get(w).Data[5] = float32(math.NaN())
		d := filepath.Join(t.TempDir(), "hf")
		require.NoError(t, m.SavePretrained(d))
		_, err = LoadPretrained(d, cfg)
		require.ErrorContains(t, err, w)
	})
}

// The largest valid scale's 127 steps are finite and the next float32's
// are not; ScaleFor never exceeds it.
func TestMaxScale(t *testing.T) {
	s := maxScale
	require.False(t, math.IsInf(float64(float32(QMax)*s), 0))
	require.True(t, math.IsInf(float64(float32(QMax)*math.Nextafter32(s, math.MaxFloat32)), 0))
	require.Equal(t, maxScale, ScaleFor(math.MaxFloat32))
	r, err := QuantizeRows([]float32{math.MaxFloat32, -math.MaxFloat32}, 1, 2)
	require.NoError(t, err)
	d := make([]float32, 2)
	require.NoError(t, r.Dequantize(d))
	require.False(t, math.IsInf(float64(d[0]), 0))
}

// FuzzLoadPretrained feeds mutated int8 directories (config.json and the
// int8 weights file) to LoadPretrained: it may fail, never panic, and a
// model it returns runs.
func FuzzLoadPretrained(f *testing.F) {
	c := hfCases()[0]
	c.cfg.Layers, c.cfg.Vocab = 1, 17
	m, err := model.New(c.cfg, 3)
	if err != nil {
		f.Fatal(err)
	}
	src := filepath.Join(f.TempDir(), "hf")
	if err := m.SavePretrained(src, model.WithDType("bfloat16")); err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Head = true
	q, err := LoadPretrained(src, cfg)
	if err != nil {
		f.Fatal(err)
	}
	good := filepath.Join(f.TempDir(), "int8")
	if err := q.SavePretrained(good, src); err != nil {
		f.Fatal(err)
	}
	cj, _ := os.ReadFile(filepath.Join(good, "config.json"))
	w, _ := os.ReadFile(filepath.Join(good, Int8WeightsFile))
	f.Add(cj, w)
	f.Add(cj, w[:len(w)/2])
	f.Fuzz(func(t *testing.T, cj, w []byte) {
		if len(w) > 1<<20 {
			return
		}
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "config.json"), cj, 0o644)
		os.WriteFile(filepath.Join(d, Int8WeightsFile), w, 0o644)
		q, err := LoadPretrained(d, DefaultConfig())
		if err != nil {
			return
		}
		if _, err := q.Logits([]int32{0, 1}, 1, 2); err != nil {
			t.Logf("loaded model fails to run: %v", err)
		}
	})
}
