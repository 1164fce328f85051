package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/model"
)

func galleon(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// tinyModel saves a small random byte-level checkpoint and returns it.
func tinyModel(t *testing.T) (string, *model.Model) {
	t.Helper()
	m, err := model.New(model.Config{Vocab: 256, DModel: 16, Layers: 1, Heads: 2, KVHeads: 2, SeqLen: 24, MLPRatio: 2,
		TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: model.AttentionFlash}, 3)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "m.safetensors")
	if err := m.Save(p); err != nil {
		t.Fatal(err)
	}
	return p, m
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlagErrors(t *testing.T) {
	mp, _ := tinyModel(t)
	d := write(t, "d.jsonl", `{"text":"hello"}`)
	cases := [][]string{
		{},
		{"train"},
		{"eval"},
		{"eval", "-model", mp},
		{"eval", "-data", d},
		{"eval", "-model", mp, "-data", d, "-batch", "0"},
		{"eval", "-model", mp, "-data", d, "-seq", "-1"},
		{"eval", "-model", mp, "-data", d, "-seq", "25"},
		{"eval", "-model", mp, "-data", d, "-nope"},
		{"eval", "-model", mp, "-data", d, "-batch", "x"},
		{"eval", "-model", mp, "-data", d, "extra"},
		{"eval", "-model", mp, "-data", write(t, "d.csv", "a")},
	}
	for _, args := range cases {
		code, out, errs := galleon(t, args...)
		if code != 2 || out != "" {
			t.Errorf("%q: exit %d, stdout %q", args, code, out)
		}
		if len(args) > 0 && strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%q: error is not one line: %q", args, errs)
		}
		if strings.Contains(errs, "goroutine") || strings.Contains(errs, "panic") {
			t.Errorf("%q: stack trace: %q", args, errs)
		}
	}
	if code, _, errs := galleon(t, "eval", "-h"); code != 0 || !strings.Contains(errs, "-model") {
		t.Errorf("eval -h: exit %d, %q", code, errs)
	}
	// Failures that are not about flags exit 1 with one line.
	for _, args := range [][]string{
		{"eval", "-model", filepath.Join(t.TempDir(), "missing"), "-data", d},
		{"eval", "-model", mp, "-data", write(t, "bad.jsonl", `{"text":"ab"}`+"\n{\n")},
	} {
		code, _, errs := galleon(t, args...)
		if code != 1 || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%q: exit %d, %q", args, code, errs)
		}
		if strings.Contains(args[4], "bad") && !strings.Contains(errs, "line 2") {
			t.Errorf("malformed line not named: %q", errs)
		}
	}
}

func TestEvalMatchesModelLoss(t *testing.T) {
	mp, m := tinyModel(t)
	// Prompt "ab" and completion "cde": targets c, d, e carry loss.
	d := write(t, "pc.jsonl", `{"prompt":"ab","completion":"cde"}`+"\n"+`{"text":"xyz0123"}`+"\n")
	code, out, errs := galleon(t, "eval", "-model", mp, "-data", d, "-seq", "8", "-batch", "1", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var res evalResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatal(err)
	}
	if res.Tokens != 3+6 || res.Windows != 2 {
		t.Fatalf("result %+v, want 9 tokens in 2 windows", res)
	}
	// The reference: each example's loss from model.Loss, weighted by its
	// number of trained targets.
	const T = 8
	pad := func(ids, tg []int32) ([]int32, []int32) {
		for len(ids) < T {
			ids, tg = append(ids, 0), append(tg, -1)
		}
		return ids, tg
	}
	in1, tg1 := pad([]int32{'a', 'b', 'c', 'd'}, []int32{-1, 'c', 'd', 'e'})
	l1, err := m.Loss(in1, tg1, 1, T)
	if err != nil {
		t.Fatal(err)
	}
	in2, tg2 := pad(model.Encode("xyz012"), model.Encode("yz0123"))
	l2, err := m.Loss(in2, tg2, 1, T)
	if err != nil {
		t.Fatal(err)
	}
	want := (3*l1 + 6*l2) / 9
	if math.Abs(res.Loss-want) > 1e-5 {
		t.Fatalf("loss %v, want %v", res.Loss, want)
	}
	if math.Abs(res.Perplexity-math.Exp(want)) > 1e-3 || math.Abs(res.BitsPerByte-want/math.Ln2) > 1e-5 {
		t.Fatalf("result %+v", res)
	}
	// Batching does not change the token-weighted loss.
	_, out2, _ := galleon(t, "eval", "-model", mp, "-data", d, "-seq", "8", "-batch", "2", "-json")
	lines = strings.Split(strings.TrimSpace(out2), "\n")
	var res2 evalResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res2); err != nil {
		t.Fatal(err)
	}
	if math.Abs(res2.Loss-want) > 1e-5 {
		t.Fatalf("batch 2 loss %v, want %v", res2.Loss, want)
	}
	// A .txt file is packed into windows of the model's context.
	txt := write(t, "a.txt", strings.Repeat("go is fun. ", 10))
	code, out, errs = galleon(t, "eval", "-model", mp, "-data", txt)
	if code != 0 || !strings.Contains(out, "109 tokens (109 bytes) in 5 windows of 24") {
		t.Fatalf("txt: exit %d, %q %q", code, out, errs)
	}
}
