package main

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

func runEval(t *testing.T, args ...string) evalResult {
	t.Helper()
	code, out, errs := galleon(t, append([]string{"eval", "-json"}, args...)...)
	if code != 0 {
		t.Fatalf("eval %q: exit %d: %s", args, code, errs)
	}
	var res evalResult
	lastJSON(t, out, &res)
	return res
}

// exampleLoss returns the summed loss and the count of scored targets of
// one sequence ids whose tokens from first on carry loss.
func exampleLoss(t *testing.T, m *model.Model, ids []int32, first int) (float64, int) {
	t.Helper()
	in := ids[:len(ids)-1]
	tg := append([]int32(nil), ids[1:]...)
	for i := 0; i < first-1; i++ {
		tg[i] = -1
	}
	loss, err := m.Loss(in, tg, 1, len(in))
	if err != nil {
		t.Fatal(err)
	}
	n := len(ids) - max(first, 1)
	return loss * float64(n), n
}

// eval on Hugging Face directories equals model.Loss on each example built
// by hand (BOS, text, EOS; the prompt masked), and bits per byte divides by
// the UTF-8 bytes of the scored text, not by tokens.
func TestEvalHF(t *testing.T) {
	dir, m := tinyLlamaDir(t)
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	text := "Hello world, this is a test of bytes: é€."
	d := write(t, "d.jsonl", `{"text":"`+text+`"}`+"\n"+`{"prompt":"Q: what?","completion":" A: nothing."}`+"\n")
	res := runEval(t, "-model", dir, "-data", d, "-batch", "2")
	ids1 := append(append([]int32{1}, tk.Encode(text)...), 2)
	s1, n1 := exampleLoss(t, m, ids1, 1)
	// The example is tokenized as one text; the completion's tokens are
	// those after the prompt's.
	full := tk.Encode("Q: what? A: nothing.")
	p := len(full) - trainedTokens(tk, []string{"Q: what?", " A: nothing."}, []bool{false, true})
	ids2 := append(append([]int32{1}, full...), 2)
	s2, n2 := exampleLoss(t, m, ids2, 1+p)
	want := (s1 + s2) / float64(n1+n2)
	if res.Tokens != n1+n2 || res.Windows != 2 || math.Abs(res.Loss-want) > 1e-5*max(1, want) {
		t.Fatalf("result %+v, want loss %v over %d tokens", res, want, n1+n2)
	}
	if math.Abs(res.Perplexity-math.Exp(want)) > 1e-4*math.Exp(want) {
		t.Fatalf("perplexity %v, want %v", res.Perplexity, math.Exp(want))
	}
	// The text alone: its bytes exactly (the EOS adds loss, no bytes).
	res = runEval(t, "-model", dir, "-data", write(t, "t.jsonl", `{"text":"`+text+`"}`))
	if res.Bytes != len(text) || math.Abs(res.BitsPerByte-s1/math.Ln2/float64(len(text))) > 1e-5 {
		t.Fatalf("text: %+v, want %d bytes and %v bits/byte", res, len(text), s1/math.Ln2/float64(len(text)))
	}
	// A .txt file is the same text packed; with -seq 8 into several windows.
	res = runEval(t, "-model", dir, "-data", write(t, "t.txt", text), "-seq", "8")
	if res.Bytes != len(text) || res.Tokens != n1 || res.Windows < 2 {
		t.Fatalf("txt: %+v, want %d bytes, %d tokens", res, len(text), n1)
	}
	// Chat messages: scored are the assistant's turn and its EOS, not the
	// user's turn or the template's "[INST] … [/INST]". (The scored tokens
	// decode on their own, and whether the Llama 2 decoder keeps the
	// reply's leading space there is the decoder's business: one byte of
	// slack.)
	res = runEval(t, "-model", dir, "-data", write(t, "c.jsonl", `{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Yo there"}]}`))
	if res.Bytes < len(" Yo there") || res.Bytes > len(" Yo there")+1 {
		t.Fatalf("chat: %+v, want the bytes of the reply", res)
	}

	// An adapter changes the loss; int8 stays close to it.
	base := runEval(t, "-model", dir, "-data", d)
	adir := writeAdapter(t, m)
	adapted := runEval(t, "-model", dir, "-adapter", adir, "-data", d)
	if adapted.Loss == base.Loss || adapted.Tokens != base.Tokens {
		t.Fatalf("adapter: %+v, base %+v", adapted, base)
	}
	q := runEval(t, "-model", dir, "-int8", "-data", d)
	if math.Abs(q.Loss-base.Loss) > 0.05*base.Loss {
		t.Fatalf("int8 loss %v, float %v", q.Loss, base.Loss)
	}
}

// On GPT-2's byte-level tokenizer the scored bytes are exactly the
// completion's.
func TestEvalGPT2Bytes(t *testing.T) {
	dir, _ := tinyGPT2Dir(t)
	res := runEval(t, "-model", dir, "-data", write(t, "pc.jsonl", `{"prompt":"Question: 2+2?","completion":" Answer: four ✓"}`))
	if res.Bytes != len(" Answer: four ✓") {
		t.Fatalf("%+v, want %d bytes", res, len(" Answer: four ✓"))
	}
	if !strings.Contains(filepath.Base(dir), "gpt2") || res.Tokens < 5 {
		t.Fatalf("%+v", res)
	}
}

// eval -json says how the base was held: a BF16 checkpoint stays bf16
// under the default -base-dtype auto and is widened by -base-dtype
// float32, and the two losses agree to bfloat16's rounding of the
// activations the products see.
func TestEvalBaseDType(t *testing.T) {
	dir, _ := tinyLlamaDirDType(t, "bfloat16")
	d := write(t, "d.txt", "Hello world, this is a test of the base dtype in eval's report.")
	kept := runEval(t, "-model", dir, "-data", d, "-seq", "8")
	wide := runEval(t, "-model", dir, "-data", d, "-seq", "8", "-base-dtype", "float32")
	if kept.BaseDType != dtypeBF16 || wide.BaseDType != dtypeFloat32 || kept.Int8 || wide.Int8 {
		t.Fatalf("auto %+v, float32 %+v", kept, wide)
	}
	if kept.Tokens != wide.Tokens || math.Abs(kept.Loss-wide.Loss) > 0.02*wide.Loss {
		t.Fatalf("bf16 loss %v over %d tokens, float32 %v over %d", kept.Loss, kept.Tokens, wide.Loss, wide.Tokens)
	}
	f32Dir, _ := tinyLlamaDir(t)
	if res := runEval(t, "-model", f32Dir, "-data", d, "-seq", "8"); res.BaseDType != dtypeFloat32 {
		t.Fatalf("float32 checkpoint: %+v", res)
	}
}
