package lora

import (
	"encoding/json"
	"flag"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

var updateGolden = flag.Bool("update-golden", false,
	"rewrite testdata/golden: the base directories and galleon's adapters (here), then PEFT-style adapters and float64 reference logits (testdata/peft_reference.py under /usr/bin/python3 with torch)")

// goldenKind is one family of the PEFT golden test: a tiny random base
// saved in dtype, and the adapter galleon trains on it.
type goldenKind struct {
	name  string
	base  model.Config
	dtype string
	lora  Config
}

func goldenKinds() []goldenKind {
	gpt2 := testModelConfig(24, 2, true)
	gpt2.Vocab, gpt2.Heads, gpt2.KVHeads = 64, 3, 3
	return []goldenKind{
		// GQA (6 query heads over 2 KV heads), untied head; every linear
		// layer but the head adapted, as `galleon finetune -target all-linear`.
		{"llama", tinyLlama("llama"), "float32", Config{R: 4, Alpha: 8, TargetModules: []string{AllLinear}, Seed: 11, BaseModel: "galleon/tiny-llama"}},
		// q/k/v biases, tied head, a BF16 checkpoint; rsLoRA on q and v.
		{"qwen2", tinyLlama("qwen2"), "bfloat16", Config{R: 4, Alpha: 6, TargetModules: []string{"q_proj", "v_proj"}, UseRSLoRA: true, Seed: 12}},
		// Conv1D layers (fan_in_fan_out true); the block's attention output
		// projection only, not the MLP's of the same leaf name.
		{"gpt2", gpt2, "float32", Config{R: 2, Alpha: 4, TargetModules: []string{"c_attn", "attn.c_proj"}, Seed: 13}},
	}
}

// writeGoldenInputs writes each kind's base directory and galleon's adapter
// (with B random, so that the adapter changes the logits).
func writeGoldenInputs(t *testing.T, root string) {
	for i, k := range goldenKinds() {
		d := filepath.Join(root, k.name)
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
		m, err := model.New(k.base, uint64(100+i))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SavePretrained(filepath.Join(d, "base"), model.WithDType(k.dtype)); err != nil {
			t.Fatal(err)
		}
		lm, err := Apply(m, k.lora)
		if err != nil {
			t.Fatal(err)
		}
		randomizeB(lm.Active(), uint64(200+i), 0.05)
		if err := lm.Active().Save(filepath.Join(d, "galleon_adapter")); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("/usr/bin/python3", "testdata/peft_reference.py", root)
	cmd.Env = append(os.Environ(), "OPENBLAS_NUM_THREADS=1")
	out, err := cmd.CombinedOutput()
	t.Logf("peft_reference.py: %s", out)
	if err != nil {
		t.Fatalf("peft_reference.py: %v", err)
	}
}

// relErr is the largest absolute difference over the reference's largest
// magnitude.
func relErr(got []float32, want []float64) float64 {
	var d, s float64
	for i := range want {
		d = math.Max(d, math.Abs(float64(got[i])-want[i]))
		s = math.Max(s, math.Abs(want[i]))
	}
	return d / s
}

// TestPEFTGolden checks galleon's LoRA against an independent float64
// implementation of PEFT's (testdata/peft_reference.py), for a Llama (GQA,
// untied head), a Qwen2 (biases, BF16 checkpoint) and a GPT-2 (Conv1D,
// fan_in_fan_out), each with the adapter galleon saved and with one written
// as PEFT writes them (rsLoRA, rank and alpha patterns, layers_to_transform
// or a regular-expression target, the head adapted). The adapted model
// (unmerged), the merged model and the merged model saved and read back by
// model.LoadPretrained must all give the reference's logits within 1e-4
// relative. Regenerate with
//
//	go test ./lora -run TestPEFTGolden -update-golden -v
func TestPEFTGolden(t *testing.T) {
	const tol = 1e-4
	root := filepath.Join("testdata", "golden")
	if *updateGolden {
		writeGoldenInputs(t, root)
	}
	for _, k := range goldenKinds() {
		d := filepath.Join(root, k.name)
		raw, err := os.ReadFile(filepath.Join(d, "golden.json"))
		if err != nil {
			t.Fatal(err)
		}
		var g map[string]json.RawMessage
		if err := json.Unmarshal(raw, &g); err != nil {
			t.Fatal(err)
		}
		var ids []int32
		var base []float64
		if err := json.Unmarshal(g["ids"], &ids); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(g["base"], &base); err != nil {
			t.Fatal(err)
		}
		T := len(ids)
		for _, adapter := range []string{"galleon_adapter", "peft_adapter"} {
			var want []float64
			var modules int
			if err := json.Unmarshal(g[adapter], &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(g[adapter+"_modules"], &modules); err != nil {
				t.Fatal(err)
			}
			name := k.name + "/" + adapter
			m, err := model.LoadPretrained(filepath.Join(d, "base"))
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(logits(t, m, ids, 1, T), base); e > tol {
				t.Fatalf("%s: the base model's logits differ from the reference's by %.2g", name, e)
			}
			lm, err := Wrap(m)
			if err != nil {
				t.Fatal(err)
			}
			a, err := lm.LoadAdapter(filepath.Join(d, adapter), DefaultAdapter)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Modules) != modules {
				t.Errorf("%s: %d modules adapted, the reference adapted %d", name, len(a.Modules), modules)
			}
			// The adapter must matter far beyond the tolerance, or the
			// comparisons below would pass without it.
			f32 := make([]float32, len(base))
			for i, v := range base {
				f32[i] = float32(v)
			}
			if e := relErr(f32, want); e < 100*tol {
				t.Fatalf("%s: the adapter moves the reference's logits by only %.2g", name, e)
			}
			unmerged := relErr(logits(t, m, ids, 1, T), want)
			merged, rep, err := lm.MergeAndUnload()
			if err != nil {
				t.Fatal(err)
			}
			if rep.Modules != modules {
				t.Errorf("%s: merged %d modules, want %d", name, rep.Modules, modules)
			}
			mergedErr := relErr(logits(t, merged, ids, 1, T), want)
			out := filepath.Join(t.TempDir(), "merged")
			// float32: a BF16 base saved in BF16 would round the merged
			// weights (galleon merge's default keeps the base's dtype).
			if err := merged.SavePretrained(out, model.WithDType("float32")); err != nil {
				t.Fatal(err)
			}
			back, err := model.LoadPretrained(out)
			if err != nil {
				t.Fatal(err)
			}
			reloaded := relErr(logits(t, back, ids, 1, T), want)
			t.Logf("%s: %d modules; max relative error vs the reference: unmerged %.2g, merged %.2g, merged+reloaded %.2g",
				name, modules, unmerged, mergedErr, reloaded)
			if k.dtype != "float32" {
				// Saved in the base's 16-bit dtype (galleon merge's
				// default), the merged weights are rounded: the logits move
				// by about the dtype's precision, not by 1e-4.
				out16 := filepath.Join(t.TempDir(), "merged16")
				if err := merged.SavePretrained(out16); err != nil {
					t.Fatal(err)
				}
				back16, err := model.LoadPretrained(out16)
				if err != nil {
					t.Fatal(err)
				}
				e16 := relErr(logits(t, back16, ids, 1, T), want)
				t.Logf("%s: merged and saved in %s: %.2g", name, k.dtype, e16)
				if e16 > 0.05 {
					t.Errorf("%s: merged and saved in %s: error %.2g, more than rounding explains", name, k.dtype, e16)
				}
			}
			if unmerged > tol || mergedErr > tol || reloaded > tol {
				t.Errorf("%s: errors %.2g (unmerged), %.2g (merged), %.2g (merged, saved, reloaded) exceed %g", name, unmerged, mergedErr, reloaded, tol)
			}
		}
	}
}
