package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/quant"
)

// galleon quantize writes an int8 directory that -int8 loads into the
// same model as quantizing the original on load, with its tokenizer; the
// sizes it reports are the files'.
func TestQuantize(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	out := filepath.Join(t.TempDir(), "int8")
	code, stdout, stderr := galleon(t, "quantize", "-model", dir, "-out", out, "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var res quantizeResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	orig, _ := os.Stat(filepath.Join(dir, "model.safetensors"))
	i8, _ := os.Stat(filepath.Join(out, quant.Int8WeightsFile))
	if res.OriginalBytes != orig.Size() || res.Int8Bytes != i8.Size() || res.Int8Layers != 2*7+1 ||
		res.Ratio != float64(i8.Size())/float64(orig.Size()) || !(res.Ratio < 1) {
		t.Fatalf("result %+v; files %d and %d bytes", res, orig.Size(), i8.Size())
	}
	t.Logf("%s", lines[0])

	ctx := context.Background()
	want, err := loadBase(ctx, baseFlags{Model: dir, Int8: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := loadBase(ctx, baseFlags{Model: out, Int8: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.EOS, want.EOS) || got.Tok.BOS() != want.Tok.BOS() {
		t.Fatalf("EOS %v BOS %d, want %v %d", got.EOS, got.Tok.BOS(), want.EOS, want.Tok.BOS())
	}
	ids := got.Tok.EncodePrompt("Hello world")
	a, err := want.Model.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	b, err := got.Model.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) {
		t.Fatal("the int8 directory's logits differ from quantizing the original on load")
	}

	// generate, eval and finetune take the int8 directory with -int8.
	if code, _, stderr := galleon(t, "generate", "-model", out, "-int8", "-prompt", "Hello", "-max-tokens", "4", "-temperature", "0"); code != 0 {
		t.Fatalf("generate -int8: exit %d: %s", code, stderr)
	}
	text := write(t, "a.txt", strings.Repeat("The int8 model reads this text. ", 40))
	if res := runEval(t, "-model", out, "-int8", "-data", text, "-seq", "32"); !(res.Loss > 0) {
		t.Fatalf("eval -int8: %+v", res)
	}
	ft := filepath.Join(t.TempDir(), "ft")
	code, stdout, stderr = galleon(t, "finetune", "-model", out, "-int8", "-data", text, "-steps", "1", "-batch", "1", "-seq", "32",
		"-val-fraction", "0", "-out", ft, "-json")
	if code != 0 {
		t.Fatalf("finetune -int8: exit %d: %s", code, stderr)
	}
	var ftRes ftResult
	lastJSON(t, stdout, &ftRes)
	if ftRes.AdapterBytes == 0 || !(ftRes.TrainLoss > 0) {
		t.Fatalf("finetune -int8: %+v", ftRes)
	}

	// Quantizing again over the earlier output replaces it.
	if code, _, stderr := galleon(t, "quantize", "-model", dir, "-out", out); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}

	// Flag errors: one line, status 2.
	file := write(t, "x.txt", "x")
	for _, args := range [][]string{
		{"quantize"},
		{"quantize", "-model", dir},
		{"quantize", "-model", dir, "-out", dir},
		{"quantize", "-model", file, "-out", out},
		{"quantize", "-model", dir, "-out", filepath.Dir(file)},
		{"quantize", "-model", dir, "-out", file},
	} {
		code, _, stderr := galleon(t, args...)
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	// A float directory with a broken weight is an error (status 1), and
	// nothing is written.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.CopyFS(bad, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	os.Truncate(filepath.Join(bad, "model.safetensors"), 1000)
	fresh := filepath.Join(t.TempDir(), "fresh")
	if code, _, stderr := galleon(t, "quantize", "-model", bad, "-out", fresh); code != 1 || !strings.Contains(stderr, "model.safetensors") {
		t.Errorf("truncated weights: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("a failed quantize left %s", fresh)
	}
}
