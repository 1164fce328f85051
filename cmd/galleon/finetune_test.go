package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

// qa are prompt/completion pairs for the tests' data files.
var qa = [][2]string{
	{"What is Go?", " A programming language."},
	{"Who made gorgonia?", " Chewxy and friends."},
	{"What does LoRA train?", " Two small matrices per layer."},
	{"Is the base frozen?", " Yes, only the adapter learns."},
}

func promptCompletion(t *testing.T, n int) string {
	var b strings.Builder
	for i := range n {
		p := qa[i%len(qa)]
		fmt.Fprintf(&b, "{\"prompt\":%q,\"completion\":%q}\n", p[0], p[1])
	}
	return write(t, "train.jsonl", b.String())
}

func TestFinetuneLoRAEndToEnd(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	out := filepath.Join(t.TempDir(), "out")
	train := promptCompletion(t, 12)
	code, stdout, stderr := galleon(t, "finetune", "-model", dir, "-data", train, "-lora-r", "8", "-lora-alpha", "16",
		"-target", "all-linear", "-steps", "4", "-batch", "2", "-seq", "32", "-val-fraction", "0.25", "-out", out, "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res map[string]any
	lastJSON(t, stdout, &res)
	for _, k := range []string{"adapter_dir", "steps", "tokens_per_second", "peak_rss_bytes", "adapter_bytes", "base_bytes", "val_loss", "train_loss"} {
		if _, ok := res[k]; !ok {
			t.Errorf("JSON lacks %q: %v", k, res)
		}
	}
	if res["steps"].(float64) != 4 || res["val_loss"] == nil || res["tokens_per_second"].(float64) <= 0 || res["adapter_bytes"].(float64) <= 0 {
		t.Errorf("result %v", res)
	}
	// processed_tokens counts this run's positions, steps·batch·seq;
	// data_targets the loss positions of one epoch.
	if pt, dt := res["processed_tokens"].(float64), res["data_targets"].(float64); pt != 4*2*32 || dt <= 0 {
		t.Errorf("processed_tokens %v, data_targets %v", pt, dt)
	}
	if b, _ := weightFilesBytes(dir); res["base_bytes"].(float64) != float64(b) {
		t.Errorf("base_bytes %v, files hold %d", res["base_bytes"], b)
	}
	// The adapter loads back onto the base with lora, all seven
	// projections of both layers adapted, and changes the logits.
	m, err := model.LoadPretrained(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int32{1, 1724, 338, 2921}
	before, err := m.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	lm, err := lora.Wrap(m)
	if err != nil {
		t.Fatal(err)
	}
	a, err := lm.LoadAdapter(res["adapter_dir"].(string), "ft")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Modules) != 14 || a.Config.R != 8 || a.Config.Alpha != 16 {
		t.Errorf("adapter: %d modules, r %d, alpha %g", len(a.Modules), a.Config.R, a.Config.Alpha)
	}
	after, err := m.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	changed := false
	for i := range before {
		changed = changed || before[i] != after[i]
	}
	if !changed {
		t.Error("the trained adapter leaves the logits unchanged")
	}
	f, err := os.Open(filepath.Join(out, "loss.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("loss.png: %v", err)
	}
	if log, err := os.ReadFile(filepath.Join(out, "train.log")); err != nil || strings.Count(string(log), "\nstep ") != 4 {
		t.Errorf("train.log: %v\n%s", err, log)
	}
	if _, err := os.Stat(filepath.Join(out, checkpointFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("finished run left a checkpoint: %v", err)
	}
}

// trainedTokens counts the tokens of the concatenated parts that carry loss
// when the whole text is tokenized at once: a token belongs to the part in
// which it starts, found by tokenizing the text up to each part's end.
func trainedTokens(tok *tokenizer.Tokenizer, parts []string, train []bool) int {
	full := strings.Join(parts, "")
	ids := tok.Encode(full)
	n, prev, end := 0, 0, 0
	for i, p := range parts {
		end += len(p)
		k := len(ids)
		if i < len(parts)-1 {
			pre := tok.Encode(full[:end])
			k = 0
			for k < len(pre) && k < len(ids) && pre[k] == ids[k] {
				k++
			}
			k = max(k, prev)
		}
		if train[i] {
			n += k - prev
		}
		prev = k
	}
	return n
}

// TestFinetuneFormats trains a step on each data format and checks the
// number of targets that carry loss against a count made here from the
// tokenizer: packing for text, prompts and user turns masked.
func TestFinetuneFormats(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := func(s string) int { return len(tok.Encode(s)) }
	text := "Go is a language. Gorgonia is a library.\nLoRA adapts a model."
	conv := `{"messages":[{"role":"user","content":"what is go"},{"role":"assistant","content":"A LANGUAGE"},{"role":"user","content":"and gorgonia"},{"role":"assistant","content":"A LIBRARY"}]}`
	cases := []struct {
		name, file, content string
		packed              bool
		trained             int
	}{
		// BOS, the text's tokens and EOS: every token after BOS is a target.
		{"txt", "a.txt", text, true, n(text) + 1},
		{"text", "t.jsonl", fmt.Sprintf("{\"text\":%q}\n{\"text\":%q}\n", "first line", "second one"), true, n("first line") + 1 + n("second one") + 1},
		// Only the completion and EOS carry loss. The example is tokenized
		// as one text, so the completion's tokens are those after the
		// prompt's.
		{"prompt-completion", "pc.jsonl", fmt.Sprintf("{\"prompt\":%q,\"completion\":%q}\n", qa[0][0], qa[0][1]), false,
			trainedTokens(tok, []string{qa[0][0], qa[0][1]}, []bool{false, true}) + 1},
		// Only the assistant turns (with their </s>; the last one's is the
		// EOS data adds) carry loss.
		{"messages", "m.jsonl", conv + "\n", false, trainedTokens(tok,
			[]string{"<s>[INST] what is go [/INST]", " A LANGUAGE</s>", "<s>[INST] and gorgonia [/INST]", " A LIBRARY"},
			[]bool{false, true, false, true}) + 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			code, stdout, stderr := galleon(t, "finetune", "-model", dir, "-data", write(t, c.file, c.content), "-steps", "1", "-batch", "1",
				"-seq", "128", "-val-fraction", "0", "-out", out, "-json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var res ftResult
			lastJSON(t, stdout, &res)
			if res.Packed != c.packed || res.DataTargets != c.trained {
				t.Errorf("packed %v with %d trained targets, want %v and %d", res.Packed, res.DataTargets, c.packed, c.trained)
			}
			if res.ValLoss != nil || !(res.TrainLoss > 0) {
				t.Errorf("result %+v", res)
			}
		})
	}
}

func TestFinetuneMalformedLine(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	bad := write(t, "bad.jsonl", `{"prompt":"a","completion":"b"}`+"\n\n"+`{"prompt":"a"}`+"\n")
	code, _, stderr := galleon(t, "finetune", "-model", dir, "-data", bad, "-steps", "1", "-out", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "line 3") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("exit %d: %q", code, stderr)
	}
	val := write(t, "val.jsonl", "{nope\n")
	code, _, stderr = galleon(t, "finetune", "-model", dir, "-data", promptCompletion(t, 2), "-val", val, "-steps", "1", "-out", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "line 1") {
		t.Errorf("malformed -val: exit %d: %q", code, stderr)
	}
}

func TestFinetuneFlagErrors(t *testing.T) {
	d := write(t, "d.jsonl", `{"text":"hello"}`)
	m := t.TempDir()
	cases := [][]string{
		{"finetune"},
		{"finetune", "-model", m},
		{"finetune", "-data", d},
		{"finetune", "-model", m, "-data", d, "-steps", "-1"},
		{"finetune", "-model", m, "-data", d, "-steps", "3", "-epochs", "2"},
		{"finetune", "-model", m, "-data", d, "-epochs", "0"},
		{"finetune", "-model", m, "-data", d, "-batch", "0"},
		{"finetune", "-model", m, "-data", d, "-seq", "1"},
		{"finetune", "-model", m, "-data", d, "-accum", "0"},
		{"finetune", "-model", m, "-data", d, "-lr", "-1"},
		{"finetune", "-model", m, "-data", d, "-lr", "NaN"},
		{"finetune", "-model", m, "-data", d, "-warmup", "-2"},
		{"finetune", "-model", m, "-data", d, "-lora-r", "0"},
		{"finetune", "-model", m, "-data", d, "-lora-alpha", "-3"},
		{"finetune", "-model", m, "-data", d, "-lora-dropout", "1"},
		{"finetune", "-model", m, "-data", d, "-target", ","},
		{"finetune", "-model", m, "-data", d, "-full", "-int8"},
		{"finetune", "-model", m, "-data", d, "-full", "-lora-r", "4"},
		{"finetune", "-model", m, "-data", d, "-workers", "0"},
		{"finetune", "-model", m, "-data", d, "-workers", "8", "-batch", "2"},
		{"finetune", "-model", m, "-data", d, "-val", d, "-val-fraction", "0.1"},
		{"finetune", "-model", m, "-data", d, "-val-fraction", "1"},
		{"finetune", "-model", m, "-data", write(t, "d.csv", "a")},
		{"finetune", "-model", m, "-data", d, "-nope"},
		{"finetune", "-model", m, "-data", d, "extra"},
	}
	for _, args := range cases {
		code, out, errs := galleon(t, args...)
		if code != 2 || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
		if strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "galleon finetune: ") {
			t.Errorf("%q: error is not one line: %q", args, errs)
		}
	}
	if code, _, errs := galleon(t, "finetune", "-h"); code != 0 || !strings.Contains(errs, "-lora-r") {
		t.Errorf("finetune -h: exit %d, %q", code, errs)
	}
	dir, _ := tinyLlamaDir(t)
	// Flags that need the model: a target it lacks, a window past its context.
	for _, args := range [][]string{
		{"finetune", "-model", dir, "-data", d, "-target", "c_attn", "-steps", "1", "-out", t.TempDir()},
		{"finetune", "-model", dir, "-data", d, "-seq", "257", "-steps", "1", "-out", t.TempDir()},
	} {
		if code, _, errs := galleon(t, args...); code != 2 || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%q: exit %d, %q", args, code, errs)
		}
	}
}

// TestFinetuneResume interrupts a run after two of five steps and resumes
// it: the adapter must equal the uninterrupted run's bit for bit (dropout,
// data order, schedule and AdamW state all continue).
func TestFinetuneResume(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	checkResume(t, dir, nil)
	if code, _, errs := galleon(t, "finetune", "-resume", t.TempDir()); code != 1 || !strings.Contains(errs, checkpointFile) {
		t.Errorf("resume without a checkpoint: exit %d, %q", code, errs)
	}
}

// Under -workers the checkpoint holds the workers' optimizer shards
// (parallel.Trainer.OptimizerState), and -resume alone continues with the
// interrupted run's workers: the resumed adapter is the uninterrupted
// run's, byte for byte. (Accumulation and dropout included.)
func TestFinetuneResumeWorkers(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	checkResume(t, dir, []string{"-workers", "2", "-accum", "2"})
}

// checkResume runs finetune with extra flags straight through and
// interrupted after step 2 and resumed with -resume alone, checks that
// both write the same adapter bytes and losses, and that a flag
// contradicting the checkpoint is refused.
func checkResume(t *testing.T, dir string, extra []string) {
	t.Helper()
	train := promptCompletion(t, 10)
	a, b := runResume(t, resumeCase{
		args: func(out string) []string {
			return append([]string{"-model", dir, "-data", train, "-steps", "5", "-batch", "2", "-seq", "24", "-lora-dropout", "0.2",
				"-target", "all-linear", "-val-fraction", "0.2", "-eval-every", "2", "-out", out, "-json"}, extra...)
		},
		stop: 2,
		between: func(resumed string) {
			if code, _, errs := galleon(t, "finetune", "-resume", resumed, "-steps", "6"); code != 2 || !strings.Contains(errs, "-steps") {
				t.Errorf("%q: contradicting -steps: exit %d, %q", extra, code, errs)
			}
		},
	})
	if b.ResumedFrom != 2 || b.Steps != 5 || *a.ValLoss != *b.ValLoss || a.TrainLoss != b.TrainLoss || a.Workers != b.Workers {
		t.Errorf("%q: straight %+v, resumed %+v", extra, a, b)
	}
}

// resumeCase is a finetune run interrupted after step stop and resumed.
type resumeCase struct {
	args    func(out string) []string // the run's flags, writing to out
	stop    int
	resume  []string             // flags after -resume DIR besides -json
	between func(resumed string) // runs on the checkpoint before the resume
}

// runResume runs c straight through and interrupted and resumed, checks
// that the interrupted run saved a checkpoint and that both wrote the
// same adapter bytes, and returns both runs' results.
func runResume(t *testing.T, c resumeCase) (straightRes, resumedRes ftResult) {
	t.Helper()
	straight := filepath.Join(t.TempDir(), "straight")
	var sout, serr bytes.Buffer
	if err := finetune(context.Background(), c.args(straight), &sout, &serr, nil); err != nil {
		t.Fatal(err)
	}
	resumed := filepath.Join(t.TempDir(), "resumed")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	err := finetune(ctx, c.args(resumed), &out, &errb, func(step int) {
		if step == c.stop {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(out.String(), "-resume "+resumed) {
		t.Fatalf("interrupted run: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(resumed, checkpointFile)); err != nil {
		t.Fatal(err)
	}
	if c.between != nil {
		c.between(resumed)
	}
	out.Reset()
	if err := finetune(context.Background(), append(append([]string{"-resume", resumed}, c.resume...), "-json"), &out, &errb, nil); err != nil {
		t.Fatal(err)
	}
	lastJSON(t, sout.String(), &straightRes)
	lastJSON(t, out.String(), &resumedRes)
	wa, err := os.ReadFile(filepath.Join(straight, "adapter", lora.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	wb, err := os.ReadFile(filepath.Join(resumed, "adapter", lora.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wa, wb) {
		t.Error("resumed adapter differs from the uninterrupted run's")
	}
	return straightRes, resumedRes
}

// On padded data (prompt/completion pairs of different lengths) two
// workers train what one trains: each step's loss is the mean over all
// of its completion tokens however the rows fall on the workers, so the
// losses agree to float32 rounding.
func TestFinetuneWorkersMatchOneWorker(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	train := promptCompletion(t, 10)
	var res [2]ftResult
	for i, workers := range []string{"1", "2"} {
		code, stdout, stderr := galleon(t, "finetune", "-model", dir, "-data", train, "-target", "all-linear", "-steps", "4", "-batch", "4", "-seq", "24",
			"-val-fraction", "0.2", "-workers", workers, "-out", filepath.Join(t.TempDir(), "out"), "-json")
		if code != 0 {
			t.Fatalf("-workers %s: exit %d: %s", workers, code, stderr)
		}
		lastJSON(t, stdout, &res[i])
	}
	if !(math.Abs(res[0].TrainLoss-res[1].TrainLoss) <= 1e-5*res[0].TrainLoss) || !(math.Abs(*res[0].ValLoss-*res[1].ValLoss) <= 1e-5**res[0].ValLoss) {
		t.Errorf("2 workers: train %v val %v; 1 worker: train %v val %v", res[1].TrainLoss, *res[1].ValLoss, res[0].TrainLoss, *res[0].ValLoss)
	}
}

func TestFinetuneFullAndWorkers(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	train := promptCompletion(t, 8)
	out := filepath.Join(t.TempDir(), "full")
	code, stdout, stderr := galleon(t, "finetune", "-model", dir, "-data", train, "-full", "-steps", "2", "-batch", "2", "-seq", "24", "-out", out, "-json")
	if code != 0 {
		t.Fatalf("-full: exit %d: %s", code, stderr)
	}
	var res ftResult
	lastJSON(t, stdout, &res)
	if res.ModelDir == "" || res.AdapterDir != "" || res.ModelBytes <= 0 {
		t.Fatalf("-full result %+v", res)
	}
	base, err := model.LoadPretrained(dir)
	if err != nil {
		t.Fatal(err)
	}
	tuned, err := model.LoadPretrained(res.ModelDir)
	if err != nil {
		t.Fatal(err)
	}
	if tuned.NumParams() != base.NumParams() || res.TrainableParams != base.NumParams() {
		t.Errorf("tuned model has %d weights, %d trained; base %d", tuned.NumParams(), res.TrainableParams, base.NumParams())
	}
	out = filepath.Join(t.TempDir(), "workers")
	code, stdout, stderr = galleon(t, "finetune", "-model", dir, "-data", train, "-workers", "2", "-steps", "2", "-batch", "2", "-seq", "24", "-out", out, "-json")
	if code != 0 {
		t.Fatalf("-workers 2: exit %d: %s", code, stderr)
	}
	lastJSON(t, stdout, &res)
	if res.Workers != 2 || res.AdapterDir == "" {
		t.Errorf("-workers 2 result %+v", res)
	}
}

// TestFinetuneInt8 trains a LoRA adapter on an int8 base, recomputing
// activations unless -grad-checkpointing=false says otherwise.
func TestFinetuneInt8(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	out := filepath.Join(t.TempDir(), "int8")
	code, stdout, stderr := galleon(t, "finetune", "-model", dir, "-data", promptCompletion(t, 4), "-int8", "-steps", "2", "-batch", "2", "-seq", "24", "-out", out, "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res ftResult
	lastJSON(t, stdout, &res)
	if res.AdapterDir == "" || !(res.TrainLoss > 0) || !res.GradCkpt {
		t.Errorf("result %+v", res)
	}
	code, stdout, stderr = galleon(t, "finetune", "-model", dir, "-data", promptCompletion(t, 4), "-int8", "-grad-checkpointing=false",
		"-steps", "1", "-batch", "2", "-seq", "24", "-out", out+"-plain", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	res = ftResult{}
	lastJSON(t, stdout, &res)
	if res.GradCkpt {
		t.Errorf("-grad-checkpointing=false: result %+v", res)
	}
}

// TestFinetuneGradCheckpointing checks that recomputing the activations
// trains the same run: the same losses up to float32 rounding.
func TestFinetuneGradCheckpointing(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	train := promptCompletion(t, 8)
	var res [2]ftResult
	for i, extra := range [][]string{nil, {"-grad-checkpointing"}} {
		args := append([]string{"finetune", "-model", dir, "-data", train, "-target", "all-linear", "-steps", "3", "-batch", "2", "-seq", "24",
			"-val-fraction", "0.25", "-out", filepath.Join(t.TempDir(), "out"), "-json"}, extra...)
		code, stdout, stderr := galleon(t, args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", extra, code, stderr)
		}
		lastJSON(t, stdout, &res[i])
	}
	if d := res[0].TrainLoss - res[1].TrainLoss; d > 1e-5 || d < -1e-5 || *res[0].ValLoss-*res[1].ValLoss > 1e-5 || *res[1].ValLoss-*res[0].ValLoss > 1e-5 {
		t.Errorf("with checkpointing: train %v val %v; without: train %v val %v", res[1].TrainLoss, *res[1].ValLoss, res[0].TrainLoss, *res[0].ValLoss)
	}
}
