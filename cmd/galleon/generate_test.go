package main

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

// runGenerate runs galleon generate with -json and returns the result and
// the text printed before the JSON line.
func runGenerate(t *testing.T, args ...string) (generateResult, string) {
	t.Helper()
	code, out, errs := galleon(t, append([]string{"generate", "-json"}, args...)...)
	if code != 0 {
		t.Fatalf("generate %q: exit %d: %s", args, code, errs)
	}
	var res generateResult
	lastJSON(t, out, &res)
	body := strings.TrimSuffix(out, "\n")
	return res, body[:strings.LastIndex(body, "\n")+1]
}

func argmax(row []float32) int32 {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return int32(best)
}

func TestGenerateHF(t *testing.T) {
	dir, m := tinyLlamaDir(t)
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	prompt := tk.EncodeSpecial("Once upon a time")
	// Greedy: each token is the argmax of a full forward pass over the
	// prompt and the tokens before it.
	res, printed := runGenerate(t, "-model", dir, "-prompt", "Once upon a time", "-temperature", "0", "-max-tokens", "12")
	if res.GeneratedTokens != 12 || len(res.IDs) != 12 || res.StopReason != "max_tokens" || res.PromptTokens != len(prompt) {
		t.Fatalf("result %+v", res)
	}
	seq := slices.Clone(prompt)
	for i, id := range res.IDs {
		logits, err := m.Logits(seq, 1, len(seq))
		if err != nil {
			t.Fatal(err)
		}
		if want := argmax(logits[len(logits)-m.Config.Vocab:]); id != want {
			t.Fatalf("token %d = %d, argmax %d", i, id, want)
		}
		seq = append(seq, id)
	}
	// The streamed text is the decoded ids.
	want, err := tk.Decode(res.IDs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != want || printed != want+"\n" {
		t.Fatalf("streamed %q, json %q, decoded %q", printed, res.Text, want)
	}

	// Sampling streams the decoded ids too, and the seed fixes them.
	a, printedA := runGenerate(t, "-model", dir, "-prompt", "Hi", "-temperature", "1.5", "-top-k", "0", "-top-p", "1", "-seed", "7", "-max-tokens", "40")
	b, _ := runGenerate(t, "-model", dir, "-prompt", "Hi", "-temperature", "1.5", "-top-k", "0", "-top-p", "1", "-seed", "7", "-max-tokens", "40")
	if want, _ := tk.Decode(a.IDs); a.Text != want || printedA != want+"\n" || !slices.Equal(a.IDs, b.IDs) {
		t.Fatalf("sampled: streamed %q, decoded %q; same seed %v, %v", printedA, want, a.IDs, b.IDs)
	}

	// An EOS id stops generation: make the greedy run's fifth token an
	// end-of-sequence id; it is returned but not printed.
	eos := res.IDs[4]
	stop := slices.Index(res.IDs, eos)
	setJSON(t, filepath.Join(dir, "config.json"), "eos_token_id", []int32{2, eos})
	res2, printed2 := runGenerate(t, "-model", dir, "-prompt", "Once upon a time", "-temperature", "0", "-max-tokens", "12")
	text, _ := tk.Decode(res.IDs[:stop])
	if !slices.Equal(res2.IDs, res.IDs[:stop+1]) || res2.StopReason != "eos" || res2.Text != text || printed2 != text+"\n" {
		t.Fatalf("eos %d: %+v, printed %q, want %v", eos, res2, printed2, res.IDs[:stop+1])
	}

	// -int8 and -adapter run the same command.
	if r, _ := runGenerate(t, "-model", dir, "-int8", "-prompt", "Hi", "-max-tokens", "3"); r.GeneratedTokens == 0 {
		t.Fatal("int8: nothing generated")
	}
}

func TestGenerateGPT2AndCheckpoint(t *testing.T) {
	dir, _ := tinyGPT2Dir(t)
	res, printed := runGenerate(t, "-model", dir, "-prompt", "Hello world", "-max-tokens", "9", "-seed", "3")
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := res.IDs
	if res.StopReason == "eos" {
		ids = ids[:len(ids)-1]
	}
	if want, _ := tk.Decode(ids); printed != want+"\n" || res.PromptTokens != len(tk.Encode("Hello world")) {
		t.Fatalf("gpt2: printed %q, decoded %q", printed, want)
	}
	mp, m := tinyModel(t)
	res, printed = runGenerate(t, "-model", mp, "-prompt", "func ", "-max-tokens", "30", "-temperature", "0")
	greedy, err := m.Generate(t.Context(), model.Encode("func "), 30, model.SampleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.IDs, greedy) || printed != model.Decode(greedy)+"\n" {
		t.Fatalf("checkpoint: %v printed %q, want %v", res.IDs, printed, greedy)
	}
}

func TestGenerateFlagErrors(t *testing.T) {
	mp, _ := tinyModel(t)
	for _, args := range [][]string{
		{"generate"},
		{"generate", "-model", mp},
		{"generate", "-prompt", "x"},
		{"generate", "-model", mp, "-prompt", "x", "-max-tokens", "0"},
		{"generate", "-model", mp, "-prompt", "x", "-temperature", "-1"},
		{"generate", "-model", mp, "-prompt", "x", "-top-k", "-1"},
		{"generate", "-model", mp, "-prompt", "x", "-top-p", "1.5"},
		{"generate", "-model", mp, "-prompt", "x", "-seed", "x"},
		{"generate", "-model", mp, "-prompt", "x", "extra"},
		{"chat"},
		{"chat", "-model", mp, "-ctx", "1"},
		{"chat", "-model", mp, "-max-tokens", strconv.Itoa(-3)},
		{"chat", "-model", mp, "-nope"},
	} {
		code, out, errs := galleon(t, args...)
		if code != 2 || out != "" || strings.Count(strings.TrimSpace(errs), "\n") != 0 || errs == "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	for _, cmd := range []string{"generate", "chat"} {
		if code, _, errs := galleon(t, cmd, "-h"); code != 0 || !strings.Contains(errs, "-max-tokens") || !strings.Contains(errs, "-adapter") {
			t.Errorf("%s -h: exit %d, %q", cmd, code, errs)
		}
	}
	// A missing model is a failure of one line, exit 1.
	if code, _, errs := galleon(t, "generate", "-model", filepath.Join(t.TempDir(), "none"), "-prompt", "x"); code != 1 || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("missing model: exit %d, %q", code, errs)
	}
}

// A model with more embedding rows than its tokenizer has tokens (as Qwen
// pads its vocabulary) samples only ids the tokenizer decodes.
func TestGenerateTokenizerSmallerThanModel(t *testing.T) {
	tiny, _ := tinyLlamaDir(t)
	cfg := tinyLlamaConfig()
	cfg.Vocab = 32768
	m, err := model.New(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	// Make the padding ids the most likely tokens (the head is [in, out]).
	head := m.Weights.Get("lm_head.weight")
	for i := range head.Data {
		if i%cfg.Vocab >= 32000 {
			head.Data[i] = 1
		}
	}
	dir := filepath.Join(t.TempDir(), "padded")
	if err := m.SavePretrained(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		copyFile(t, filepath.Join(tiny, f), filepath.Join(dir, f))
	}
	res, _ := runGenerate(t, "-model", dir, "-prompt", "Hi", "-max-tokens", "20", "-temperature", "2", "-top-k", "0")
	for _, id := range res.IDs {
		if id >= 32000 {
			t.Fatalf("sampled id %d past the tokenizer's 32000", id)
		}
	}
}
