package main

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
)

// mergeTestAdapter saves a LoRA adapter for the model in dir with nonzero B (so
// merging changes the weights) and returns its directory and the adapted
// model's logits for ids.
func mergeTestAdapter(t *testing.T, dir string, cfg lora.Config, ids []int32) (string, []float32) {
	t.Helper()
	m, err := model.LoadPretrained(dir)
	if err != nil {
		t.Fatal(err)
	}
	lm, err := lora.Apply(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := lm.Active()
	rng := rand.New(rand.NewPCG(9, 9))
	for _, mod := range a.Modules {
		for i := range a.B(mod).Data {
			a.B(mod).Data[i] = float32(rng.NormFloat64() * 0.05)
		}
	}
	ad := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(ad); err != nil {
		t.Fatal(err)
	}
	want, err := m.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	return ad, want
}

func mergeRelErr(got, want []float32) float64 {
	var d, s float64
	for i := range want {
		d = math.Max(d, math.Abs(float64(got[i])-float64(want[i])))
		s = math.Max(s, math.Abs(float64(want[i])))
	}
	return d / s
}

// merge writes a directory that model.LoadPretrained reads back with the
// adapted model's logits, with the base's tokenizer files and dtype.
func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  func(testing.TB) (string, *model.Model)
		cfg  lora.Config
		n    int
	}{
		{"llama", tinyLlamaDir, lora.Config{R: 4, Alpha: 8, TargetModules: []string{lora.AllLinear}, UseRSLoRA: true}, 14},
		{"gpt2", tinyGPT2Dir, lora.Config{R: 2, Alpha: 4, TargetModules: []string{"c_attn", "mlp.c_proj"}}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := tc.dir(t)
			if err := os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(`{"max_new_tokens": 7}`), 0o644); err != nil {
				t.Fatal(err)
			}
			ids := []int32{5, 17, 300, 2, 44, 1000, 9}
			ad, want := mergeTestAdapter(t, dir, tc.cfg, ids)
			out := filepath.Join(t.TempDir(), "merged")
			code, stdout, stderr := galleon(t, "merge", "-model", dir, "-adapter", ad, "-out", out, "-json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var res mergeResult
			lastJSON(t, stdout, &res)
			if res.OutDir != out || res.MergedModules != tc.n || !(res.MaxAbsDelta > 0) || res.Bytes <= 0 || res.DType != "float32" || res.CopiedFiles != 3 {
				t.Errorf("result %+v", res)
			}
			for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"} {
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Errorf("merged directory lacks %s", f)
				}
			}
			m, err := model.LoadPretrained(out)
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.Logits(ids, 1, len(ids))
			if err != nil {
				t.Fatal(err)
			}
			if e := mergeRelErr(got, want); e > 1e-5 {
				t.Errorf("merged model's logits differ from the adapted model's by %g relative", e)
			}
			// Again into the same -out, in bfloat16: replaced, and half the weight bytes.
			code, stdout, stderr = galleon(t, "merge", "-model", dir, "-adapter", ad, "-out", out, "-dtype", "bfloat16", "-json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var res2 mergeResult
			lastJSON(t, stdout, &res2)
			if res2.DType != "bfloat16" || res2.Bytes >= res.Bytes {
				t.Errorf("bfloat16 result %+v after float32 %+v", res2, res)
			}
			if m, err = model.LoadPretrained(out); err != nil {
				t.Fatal(err)
			}
			if got, err = m.Logits(ids, 1, len(ids)); err != nil {
				t.Fatal(err)
			}
			if e := mergeRelErr(got, want); e > 5e-2 {
				t.Errorf("bfloat16 merged logits differ by %g relative", e)
			}
		})
	}
}

// A 16-bit base merges into float32 weights unless -dtype says otherwise:
// W + scale·B·A is not a 16-bit number.
func TestMergeBF16BaseDefaultsToFloat32(t *testing.T) {
	dir, m := tinyLlamaDir(t)
	bf := filepath.Join(t.TempDir(), "bf16")
	if err := m.SavePretrained(bf, model.WithDType("bfloat16")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bf, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ad, _ := mergeTestAdapter(t, bf, lora.Config{R: 2, Alpha: 4, TargetModules: []string{"q_proj"}}, []int32{1, 2})
	for _, c := range []struct {
		args []string
		want string
	}{{nil, "float32"}, {[]string{"-dtype", "auto"}, "bfloat16"}} {
		out := filepath.Join(t.TempDir(), "merged")
		code, stdout, stderr := galleon(t, append([]string{"merge", "-model", bf, "-adapter", ad, "-out", out, "-json"}, c.args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, stderr)
		}
		var res mergeResult
		lastJSON(t, stdout, &res)
		if res.DType != c.want {
			t.Errorf("%v: dtype %s, want %s", c.args, res.DType, c.want)
		}
	}
}

func TestMergeFlagErrors(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	ad, _ := mergeTestAdapter(t, dir, lora.Config{R: 2, Alpha: 4, TargetModules: []string{"q_proj"}}, []int32{1, 2})
	ckpt, _ := tinyModel(t)
	out := filepath.Join(t.TempDir(), "o")
	for _, args := range [][]string{
		{"merge"},
		{"merge", "-model", dir, "-out", out},
		{"merge", "-model", dir, "-adapter", ad},
		{"merge", "-model", dir, "-adapter", ad, "-out", out, "-dtype", "int4"},
		{"merge", "-model", dir, "-adapter", ad, "-out", out, "-int8"},
		{"merge", "-model", dir, "-adapter", ad, "-out", dir},
		{"merge", "-model", dir, "-adapter", ad, "-out", ad},
		{"merge", "-model", ckpt, "-adapter", ad, "-out", out},
		{"merge", "-model", dir, "-adapter", ad, "-out", out, "extra"},
		{"merge", "-bogus"},
	} {
		code, stdout, stderr := galleon(t, args...)
		if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "galleon merge") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one line", args, code, stdout, stderr)
		}
	}
	// An adapter for another model fails (exit 1) and leaves no output.
	gdir, _ := tinyGPT2Dir(t)
	code, _, stderr := galleon(t, "merge", "-model", gdir, "-adapter", ad, "-out", out)
	if code != 1 || !strings.Contains(stderr, "adapter") {
		t.Errorf("mismatched adapter: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed merge left %s: %v", out, err)
	}
}
