package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/data"
	"github.com/galleon-ml/galleon/model"
)

func TestLoadBaseHF(t *testing.T) {
	dir, m := tinyLlamaDir(t)
	if err := os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(`{"eos_token_id": [2, 7]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := loadBase(ctx, baseFlags{Model: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !l.HF || l.LoRA != nil || l.Model.Config.Vocab != 32000 {
		t.Fatalf("loaded %+v", l)
	}
	if !slices.Equal(l.EOS, []int32{2, 7}) {
		t.Fatalf("EOS %v, want [2 7]", l.EOS)
	}
	ids := []int32{1, 450, 4996, 17354}
	want, err := m.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.Model.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatal("loaded model's logits differ from the saved model's")
	}
	if p := l.Tok.EncodePrompt("Hello"); p[0] != 1 || l.Tok.BOS() != 1 {
		t.Fatalf("prompt ids %v: no BOS", p)
	}

	// -int8: close to the float logits, not equal.
	q, err := loadBase(ctx, baseFlags{Model: dir, Int8: true})
	if err != nil {
		t.Fatal(err)
	}
	qg, err := q.Model.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	var d, s float64
	for i := range want {
		d = max(d, float64(abs32(qg[i]-want[i])))
		s = max(s, float64(abs32(want[i])))
	}
	if d == 0 || d > 0.1*s {
		t.Fatalf("int8 logits differ by %v (scale %v)", d, s)
	}

	// -adapter: a saved adapter with nonzero B changes the logits exactly
	// as the in-memory adapter does.
	base, err := model.LoadPretrained(dir)
	if err != nil {
		t.Fatal(err)
	}
	adir := writeAdapter(t, base)
	want, err = base.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	a, err := loadBase(ctx, baseFlags{Model: dir, Adapter: adir})
	if err != nil {
		t.Fatal(err)
	}
	got, err = a.Model.Logits(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	if a.LoRA == nil || !slices.Equal(got, want) {
		t.Fatal("adapter not applied as saved")
	}
	if _, err := loadBase(ctx, baseFlags{Model: dir, Adapter: adir, Int8: true}); err != nil {
		t.Fatalf("adapter on int8: %v", err)
	}

	// Errors name what is wrong.
	for _, f := range []baseFlags{
		{Model: filepath.Join(t.TempDir(), "missing")},
		{Model: dir, Adapter: t.TempDir()},
	} {
		if _, err := loadBase(ctx, f); err == nil {
			t.Errorf("%+v: no error", f)
		}
	}
	// An int8 directory (galleon quantize) read without -int8 says so.
	int8File := filepath.Join(dir, "model.int8.safetensors")
	if err := os.WriteFile(int8File, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadBase(ctx, baseFlags{Model: dir}); err == nil || !strings.Contains(err.Error(), "add -int8") {
		t.Errorf("int8 directory without -int8: %v", err)
	}
	os.Remove(int8File)
	os.Remove(filepath.Join(dir, "tokenizer.json"))
	if _, err := loadBase(ctx, baseFlags{Model: dir}); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("no tokenizer: %v", err)
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

func TestLoadBaseCheckpoint(t *testing.T) {
	mp, _ := tinyModel(t)
	l, err := loadBase(context.Background(), baseFlags{Model: mp})
	if err != nil {
		t.Fatal(err)
	}
	if l.HF || len(l.EOS) != 0 || l.Tok.BOS() != -1 {
		t.Fatalf("loaded %+v", l)
	}
	if _, err := l.Tok.ApplyChatTemplate(nil, true); err == nil {
		t.Fatal("byte-level checkpoints have no chat template")
	}
	// The byte stream holds back a partial character: "é" is two bytes.
	s := l.Tok.NewStream()
	var out string
	for _, id := range model.Encode("aé€b") {
		piece, err := s.Add(id)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix("aé€b", out+piece) || (piece != "" && !strings.HasSuffix(piece, "a") && len(piece) == 1 && piece[0] >= 0x80) {
			t.Fatalf("piece %q after %q", piece, out)
		}
		out += piece
	}
	if out+s.Flush() != "aé€b" {
		t.Fatalf("streamed %q", out)
	}
	if _, err := loadBase(context.Background(), baseFlags{Model: mp, Int8: true}); err != nil {
		t.Fatal(err)
	}
}

// dataOptions: Llama gets BOS and EOS once per example, also when the chat
// template writes them itself, and assistant turns (with their EOS) carry
// loss.
func TestDataOptions(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	l, err := loadBase(context.Background(), baseFlags{Model: dir})
	if err != nil {
		t.Fatal(err)
	}
	opts := l.dataOptions()
	if opts.BOS != 1 || opts.EOS != 2 {
		t.Fatalf("BOS %d EOS %d", opts.BOS, opts.EOS)
	}
	exs, err := data.ReadJSONL(strings.NewReader(`{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Yo"},{"role":"user","content":"And?"},{"role":"assistant","content":"Ok"}]}`), opts)
	if err != nil {
		t.Fatal(err)
	}
	ex := exs[0]
	count := func(id int32) (n int) {
		for _, x := range ex.IDs {
			if x == id {
				n++
			}
		}
		return n
	}
	if ex.IDs[0] != 1 || count(1) != 1 || count(2) != 2 || ex.IDs[len(ex.IDs)-1] != 2 {
		t.Fatalf("ids %v: want one BOS first and the two turns' EOS", ex.IDs)
	}
	// Trained: " Yo</s>" and " Ok</s>" (the template's space, content and EOS).
	var trained []int32
	for i, id := range ex.IDs {
		if ex.Train[i] {
			trained = append(trained, id)
		}
	}
	text, err := l.Tok.Decode(trained)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(strings.Fields(text), " ") != "Yo</s> Ok</s>" {
		t.Fatalf("trained text %q", text)
	}
}
