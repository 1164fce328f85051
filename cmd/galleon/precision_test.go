package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

// TestFinetunePrecisionFlags runs finetune's -precision and -base-dtype
// paths on a BF16 and a float32 directory and checks what each holds and
// reports.
func TestFinetunePrecisionFlags(t *testing.T) {
	bf16Dir, _ := tinyLlamaDirDType(t, "bfloat16")
	f32Dir, _ := tinyLlamaDir(t)
	train := promptCompletion(t, 6)
	// What the BF16 fixture holds in bfloat16: each layer's q, k, v, o,
	// gate, up and down, the untied head and the token embedding.
	c := tinyLlamaConfig()
	kv := c.KVHeads * (c.DModel / c.Heads)
	linears := c.Layers*(2*c.DModel*c.DModel+2*c.DModel*kv+3*c.DModel*c.Intermediate) + 2*c.DModel*c.Vocab
	cases := []struct {
		dir            string
		flags          []string
		prec, dtype    string
		bf16Params     int
		wantTrainedAll bool
	}{
		{bf16Dir, nil, "bf16", "bf16", linears, false}, // auto keeps a BF16 checkpoint's weights
		{bf16Dir, []string{"-base-dtype", "bf16"}, "bf16", "bf16", linears, false},
		{bf16Dir, []string{"-base-dtype", "float32"}, "fp32", "float32", 0, false},
		{bf16Dir, []string{"-precision", "fp32"}, "fp32", "float32", 0, false},
		{bf16Dir, []string{"-base-dtype", "float32", "-precision", "bf16"}, "bf16", "float32", 0, false},
		{f32Dir, nil, "fp32", "float32", 0, false}, // a float32 checkpoint loads as before
		{f32Dir, []string{"-precision", "bf16"}, "bf16", "float32", 0, false},
		{bf16Dir, []string{"-full", "-precision", "bf16"}, "bf16", "float32", 0, true},
		{bf16Dir, []string{"-int8"}, "fp32", "float32", 0, false},
	}
	for _, c := range cases {
		args := append([]string{"finetune", "-model", c.dir, "-data", train, "-target", "all-linear", "-steps", "1", "-batch", "2", "-seq", "24",
			"-val-fraction", "0", "-out", filepath.Join(t.TempDir(), "out"), "-json"}, c.flags...)
		if slices.Contains(c.flags, "-full") {
			args = slices.DeleteFunc(args, func(s string) bool { return s == "-target" || s == "all-linear" })
		}
		code, stdout, stderr := galleon(t, args...)
		if code != 0 {
			t.Errorf("%q: exit %d: %s", c.flags, code, stderr)
			continue
		}
		var res ftResult
		lastJSON(t, stdout, &res)
		if res.Precision != c.prec || res.BaseDType != c.dtype || res.BF16Params != c.bf16Params || !(res.TrainLoss > 0) {
			t.Errorf("%s %q: precision %q, base %q, %d bf16 weights, loss %v; want %q, %q, %d", filepath.Base(c.dir), c.flags,
				res.Precision, res.BaseDType, res.BF16Params, res.TrainLoss, c.prec, c.dtype, c.bf16Params)
		}
		if !strings.Contains(stdout, c.prec+" products") {
			t.Errorf("%q: the first line does not name the products' precision:\n%s", c.flags, stdout)
		}
	}
	// A float32 checkpoint has no BF16 weights to keep.
	code, out, errs := galleon(t, "finetune", "-model", f32Dir, "-data", train, "-base-dtype", "bf16", "-steps", "1", "-out", t.TempDir())
	if code != 2 || out != "" || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "stores no BF16") {
		t.Errorf("-base-dtype bf16 on a float32 directory: exit %d, %q, %q", code, out, errs)
	}
}

func TestFinetunePrecisionFlagErrors(t *testing.T) {
	d := write(t, "d.jsonl", `{"text":"hello"}`)
	m := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-precision", "fp16"}, "-precision"},
		{[]string{"-base-dtype", "fp16"}, "-base-dtype"},
		{[]string{"-full", "-base-dtype", "bf16"}, "-full"},
		{[]string{"-int8", "-base-dtype", "bf16"}, "-int8"},
		{[]string{"-int8", "-precision", "bf16"}, "-int8"},
		{[]string{"-base-dtype", "bf16", "-precision", "fp32"}, "-precision fp32"},
		{[]string{"-full", "-precision", "bf16", "-workers", "2"}, "one worker"},
		{[]string{"-base-dtype", "float32", "-precision", "bf16", "-workers", "2"}, "one worker"},
	} {
		args := append([]string{"finetune", "-model", m, "-data", d}, c.args...)
		code, out, errs := galleon(t, args...)
		if code != 2 || out != "" || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "galleon finetune: ") || !strings.Contains(errs, c.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", c.args, code, out, errs)
		}
	}
}

// TestFinetuneResumeBF16 interrupts a run on a bf16 base and resumes it:
// the adapter equals the uninterrupted run's bit for bit, the checkpoint
// keeps the resolved precision and base dtype, and a resume that asks for
// another base is refused.
func TestFinetuneResumeBF16(t *testing.T) {
	dir, _ := tinyLlamaDirDType(t, "bfloat16")
	train := promptCompletion(t, 8)
	a, b := runResume(t, resumeCase{
		args: func(out string) []string {
			return []string{"-model", dir, "-data", train, "-steps", "3", "-batch", "2", "-seq", "24", "-target", "all-linear", "-val-fraction", "0", "-out", out, "-json"}
		},
		stop:   1,
		resume: []string{"-base-dtype", "auto"},
		between: func(resumed string) {
			stored, _, err := readCheckpointOptions(resumed)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Precision != "bf16" || stored.BaseDType != dtypeBF16 {
				t.Errorf("checkpoint options: precision %q, base %q", stored.Precision, stored.BaseDType)
			}
			for _, flags := range [][]string{{"-base-dtype", "float32"}, {"-precision", "fp32"}} {
				if code, _, errs := galleon(t, append([]string{"finetune", "-resume", resumed}, flags...)...); code != 2 || !strings.Contains(errs, flags[0]) {
					t.Errorf("resume with %q: exit %d, %q", flags, code, errs)
				}
			}
		},
	})
	if b.ResumedFrom != 1 || b.BaseDType != dtypeBF16 || b.Precision != "bf16" || a.TrainLoss != b.TrainLoss {
		t.Errorf("straight %+v, resumed %+v", a, b)
	}
}

// TestMergeResumeOptionsOldCheckpoint: a checkpoint written before
// -precision and -base-dtype existed trained float32 products on a
// float32 base, and resumes so.
func TestMergeResumeOptionsOldCheckpoint(t *testing.T) {
	stored := ftOptions{Model: "m", Data: "d.txt", Steps: 3, Batch: 1, Seq: 8, Accum: 1, LoRAR: 8, LoRAAlpha: 16, Targets: []string{"q_proj"}}
	o := stored
	o.BaseDType = dtypeAuto
	if err := mergeResumeOptions(&o, stored, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if o.Precision != "fp32" || o.BaseDType != dtypeFloat32 {
		t.Errorf("resumed old checkpoint: precision %q, base %q", o.Precision, o.BaseDType)
	}
	o = stored
	o.Precision = "bf16"
	if err := mergeResumeOptions(&o, stored, map[string]bool{"precision": true}); err == nil || !strings.Contains(err.Error(), "-precision") {
		t.Errorf("-precision bf16 against an old checkpoint: %v", err)
	}
}

// TestGenerateBF16Base: generate, eval and chat hold a BF16 checkpoint's
// weights in bfloat16 by default (-base-dtype auto), and greedy decoding
// follows that model's own logits.
func TestGenerateBF16Base(t *testing.T) {
	dir, _ := tinyLlamaDirDType(t, "bfloat16")
	m, err := model.LoadPretrained(dir, model.KeepBF16())
	if err != nil {
		t.Fatal(err)
	}
	if m.BF16Params() == 0 {
		t.Fatal("KeepBF16 kept nothing")
	}
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	seq := tk.EncodeSpecial("Once upon a time")
	res, _ := runGenerate(t, "-model", dir, "-prompt", "Once upon a time", "-temperature", "0", "-max-tokens", "6")
	for i, id := range res.IDs {
		logits, err := m.Logits(seq, 1, len(seq))
		if err != nil {
			t.Fatal(err)
		}
		if want := argmax(logits[len(logits)-m.Config.Vocab:]); id != want {
			t.Fatalf("token %d = %d, the bf16 model's argmax %d", i, id, want)
		}
		seq = append(seq, id)
	}
	f32, _ := runGenerate(t, "-model", dir, "-base-dtype", "float32", "-prompt", "Once upon a time", "-temperature", "0", "-max-tokens", "6")
	if f32.GeneratedTokens != 6 {
		t.Errorf("-base-dtype float32: %+v", f32)
	}
	adapter := writeAdapter(t, m)
	if r, _ := runGenerate(t, "-model", dir, "-base-dtype", "bf16", "-adapter", adapter, "-prompt", "Hi", "-max-tokens", "3"); r.GeneratedTokens == 0 {
		t.Error("bf16 base with an adapter: nothing generated")
	}
	f32Dir, _ := tinyLlamaDir(t)
	for _, args := range [][]string{
		{"generate", "-model", f32Dir, "-base-dtype", "bf16", "-prompt", "Hi"},
		{"generate", "-model", dir, "-base-dtype", "bf16", "-int8", "-prompt", "Hi"},
		{"generate", "-model", dir, "-base-dtype", "half", "-prompt", "Hi"},
		{"eval", "-model", dir, "-base-dtype", "half", "-data", write(t, "e.txt", "hello")},
		{"chat", "-model", dir, "-base-dtype", "half"},
	} {
		code, out, errs := galleon(t, args...)
		if code != 2 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "-base-dtype") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}
