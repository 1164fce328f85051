package data

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// bytesEnc encodes text as its bytes, so token counts are byte counts.
type bytesEnc struct{}

func (bytesEnc) Encode(s string) []int32 {
	ids := make([]int32, len(s))
	for i := range len(s) {
		ids[i] = int32(s[i])
	}
	return ids
}

// tagChat renders each turn as "<role>content</>", training on the whole
// assistant turn including its closing tag.
type tagChat struct{}

func (tagChat) Render(ms []Message) ([]Segment, error) {
	var segs []Segment
	for _, m := range ms {
		segs = append(segs, Segment{Text: "<" + m.Role + ">"})
		segs = append(segs, Segment{Text: m.Content + "</>", Train: m.Role == "assistant"})
	}
	return segs, nil
}

const bos, eos = 300, 301

func opts() Options { return Options{Encoder: bytesEnc{}, Chat: tagChat{}, BOS: bos, EOS: eos} }

func TestTextLine(t *testing.T) {
	ex, err := ReadJSONL(strings.NewReader(`{"text":"ab"}`+"\n\n"), opts())
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 1 || !slices.Equal(ex[0].IDs, []int32{bos, 'a', 'b', eos}) {
		t.Fatalf("examples %v", ex)
	}
	if got := ex[0].Trained(); got != 3 {
		t.Fatalf("trained %d, want 3 (a, b, EOS)", got)
	}
}

func TestPromptCompletionMask(t *testing.T) {
	o := opts()
	o.BOS = -1
	ex, err := ReadJSONL(strings.NewReader(`{"prompt":"abc","completion":"de"}`), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := ex[0].Trained(); got != 3 {
		t.Fatalf("trained %d, want 3 (d, e, EOS)", got)
	}
	ws, err := Pad(ex, 8, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := ws[0]
	if !slices.Equal(w.Inputs, []int32{'a', 'b', 'c', 'd', 'e', 0, 0, 0}) {
		t.Fatalf("inputs %v", w.Inputs)
	}
	if !slices.Equal(w.Targets, []int32{-1, -1, 'd', 'e', eos, -1, -1, -1}) {
		t.Fatalf("targets %v", w.Targets)
	}
	if w.Len != 5 || w.Trained() != 3 {
		t.Fatalf("len %d trained %d", w.Len, w.Trained())
	}
}

func TestMessagesMask(t *testing.T) {
	src := `{"messages":[{"role":"system","content":"be kind"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"?"},{"role":"assistant","content":"ok"}]}`
	ex, err := ReadJSONL(strings.NewReader(src), opts())
	if err != nil {
		t.Fatal(err)
	}
	// Trained: "hello</>" (8) + "ok</>" (5) + EOS (1).
	if got := ex[0].Trained(); got != 14 {
		t.Fatalf("trained %d, want 14", got)
	}
	ws, err := Pad(ex, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, tg := range ws[0].Targets {
		if tg >= 0 && tg < 256 {
			got = append(got, byte(tg))
		}
	}
	if string(got) != "hello</>ok</>" {
		t.Fatalf("trained text %q", got)
	}
	// Truncation to T keeps the count of what remains.
	ws, err = Pad(ex, len("<system>be kind</><user>hi</><assistant>hel"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := ws[0].Trained(); got != 3 {
		t.Fatalf("truncated trained %d, want 3 (h, e, l)", got)
	}
}

func TestMalformedLines(t *testing.T) {
	cases := []struct{ src, want string }{
		{`{"text":"a"}` + "\n" + `{"text":"b"}` + "\n" + `{"text":` + "\n", "line 3"},
		{"\n" + `{"text":"a","prompt":"b"}`, "line 2"},
		{`{"prompt":"a"}`, "line 1"},
		{`{"txt":"a"}`, "line 1"},
		{`{"text":"a"} {"text":"b"}`, "line 1"},
		{`{"messages":[{"content":"a"}]}`, "line 1"},
		{"\n\n", "no examples"},
	}
	for _, c := range cases {
		_, err := ReadJSONL(strings.NewReader(c.src), opts())
		if err == nil || !errors.Is(err, ErrData) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want ErrData mentioning %q", c.src, err, c.want)
		}
	}
	o := opts()
	o.Chat = nil
	if _, err := ReadJSONL(strings.NewReader(`{"messages":[{"role":"user","content":"a"}]}`), o); !errors.Is(err, ErrData) {
		t.Errorf("messages without a template: %v", err)
	}
	o = opts()
	o.EOS = -1
	if _, err := ReadJSONL(strings.NewReader(`{"prompt":"a","completion":""}`), o); err == nil || !strings.Contains(err.Error(), "no token carries loss") {
		t.Errorf("empty completion: %v", err)
	}
}

func TestReadFileAndPack(t *testing.T) {
	dir := t.TempDir()
	txt := filepath.Join(dir, "a.txt")
	text := strings.Repeat("the quick brown fox. ", 20)
	if err := os.WriteFile(txt, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ex, err := ReadFile(txt, opts())
	if err != nil {
		t.Fatal(err)
	}
	N := len(text) + 2 // BOS and EOS
	for _, T := range []int{1, 7, 64, N - 1, N + 5} {
		ws, err := Pack(ex, T, 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := (N - 1 + T - 1) / T; len(ws) != want {
			t.Fatalf("T=%d: %d windows, want %d", T, len(ws), want)
		}
		trained := 0
		for _, w := range ws {
			trained += w.Trained()
		}
		if trained != N-1 {
			t.Fatalf("T=%d: %d trained targets, want %d", T, trained, N-1)
		}
	}
	bad := filepath.Join(dir, "b.jsonl")
	if err := os.WriteFile(bad, []byte(`{"text":"a"}`+"\nnot json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(bad, opts()); err == nil || !strings.Contains(err.Error(), "b.jsonl: line 2") {
		t.Fatalf("error %v", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "c.csv"), opts()); err == nil {
		t.Fatal("missing .csv read")
	}
	if _, err := Pack(ex, 0, 0); !errors.Is(err, ErrData) {
		t.Fatalf("T=0: %v", err)
	}
}

func windows(n, T int) []Window {
	ws := make([]Window, n)
	for i := range ws {
		ws[i] = window([]int32{int32(i), int32(i + 1000)}, []bool{false, true}, T, 0)
	}
	return ws
}

func TestSplit(t *testing.T) {
	ws := windows(50, 4)
	tr, va, err := Split(ws, 0.1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(va) != 5 || len(tr) != 45 {
		t.Fatalf("split %d/%d", len(tr), len(va))
	}
	tr2, va2, _ := Split(ws, 0.1, 7)
	_, va3, _ := Split(ws, 0.1, 8)
	first := func(ws []Window) []int32 {
		var out []int32
		for _, w := range ws {
			out = append(out, w.Inputs[0])
		}
		return out
	}
	if !slices.Equal(first(va), first(va2)) || !slices.Equal(first(tr), first(tr2)) {
		t.Fatal("same seed, different split")
	}
	if slices.Equal(first(va), first(va3)) {
		t.Fatal("seeds 7 and 8 chose the same validation windows")
	}
	all := append(first(tr), first(va)...)
	slices.Sort(all)
	for i, v := range all {
		if v != int32(i) {
			t.Fatalf("train and validation do not partition the windows: %v", all)
		}
	}
	if !slices.IsSorted(first(va)) || !slices.IsSorted(first(tr)) {
		t.Fatal("split does not keep order")
	}
	if _, va, _ := Split(windows(3, 4), 0.01, 1); len(va) != 1 {
		t.Fatalf("tiny fraction gave %d validation windows", len(va))
	}
	for _, f := range []float64{-0.1, 1} {
		if _, _, err := Split(ws, f, 1); !errors.Is(err, ErrData) {
			t.Fatalf("fraction %g: %v", f, err)
		}
	}
}

func TestLoaderResume(t *testing.T) {
	const B, T = 3, 4
	ws := windows(10, T)
	l, err := NewLoader(ws, B, 42)
	if err != nil {
		t.Fatal(err)
	}
	in, tg := make([]int32, B*T), make([]int32, B*T)
	seen := map[int32]int{}
	for range 10 { // 30 windows: three epochs
		n, err := l.Next(in, tg)
		if err != nil {
			t.Fatal(err)
		}
		if n != B {
			t.Fatalf("trained %d, want %d", n, B)
		}
		for r := range B {
			seen[in[r*T]]++
		}
	}
	for i := range 10 {
		if seen[int32(i)] != 3 {
			t.Fatalf("window %d seen %d times in three epochs", i, seen[int32(i)])
		}
	}
	if l.Epoch() != 2 {
		t.Fatalf("epoch %d", l.Epoch())
	}
	state := l.State()
	var want [][]int32
	for range 7 {
		l.Next(in, tg)
		want = append(want, slices.Clone(in), slices.Clone(tg))
	}
	l2, _ := NewLoader(ws, B, 42)
	if err := l2.SetState(state); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		l2.Next(in, tg)
		if !slices.Equal(in, want[2*i]) || !slices.Equal(tg, want[2*i+1]) {
			t.Fatalf("batch %d after resume differs", i)
		}
	}
	for _, other := range []*Loader{must(NewLoader(ws, B, 43)), must(NewLoader(ws, 2, 42)), must(NewLoader(windows(11, T), B, 42))} {
		if err := other.SetState(state); !errors.Is(err, ErrData) {
			t.Fatalf("foreign state accepted: %v", err)
		}
	}
	if err := l2.SetState(state[:5]); !errors.Is(err, ErrData) {
		t.Fatalf("short state: %v", err)
	}
	if _, err := l2.Next(in[:1], tg); !errors.Is(err, ErrData) {
		t.Fatalf("short buffer: %v", err)
	}
	if _, err := NewLoader(ws, 0, 1); !errors.Is(err, ErrData) {
		t.Fatalf("B=0: %v", err)
	}
}

func must(l *Loader, err error) *Loader {
	if err != nil {
		panic(err)
	}
	return l
}

// chatML renders turns ChatML-style, as SmolLM2's template does.
func chatML(ms []Message, gen bool) (string, error) {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
	}
	if gen {
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String(), nil
}

func TestTemplateRenderer(t *testing.T) {
	ms := []Message{{"system", "s"}, {"user", "hi"}, {"assistant", "yo"}, {"user", "?"}, {"assistant", "k"}}
	segs, err := TemplateRenderer(chatML).Render(ms)
	if err != nil {
		t.Fatal(err)
	}
	var all, trained string
	for _, s := range segs {
		all += s.Text
		if s.Train {
			trained += s.Text
		}
	}
	if want, _ := chatML(ms, false); all != want {
		t.Fatalf("segments join to %q, want %q", all, want)
	}
	if trained != "yo<|im_end|>\nk<|im_end|>\n" {
		t.Fatalf("trained %q", trained)
	}
	o := opts()
	o.Chat, o.EOS = TemplateRenderer(chatML), -1
	line := `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}`
	ex, err := ReadJSONL(strings.NewReader(line), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := ex[0].Trained(); got != len("yo<|im_end|>\n") {
		t.Fatalf("trained %d", got)
	}
	bad := func(ms []Message, gen bool) (string, error) { return fmt.Sprint(len(ms)), nil }
	if _, err := TemplateRenderer(bad).Render(ms); !errors.Is(err, ErrData) {
		t.Fatalf("non-prefix template: %v", err)
	}
}

// markEnc mimics tokenizers that mark the start of every text they encode
// (SentencePiece's "▁" in Llama 2's legacy Metaspace): "_" then the bytes,
// and "xy" merges into one token 1000.
type markEnc struct{}

func (markEnc) Encode(s string) []int32 {
	ids := []int32{'_'}
	for i := 0; i < len(s); i++ {
		if strings.HasPrefix(s[i:], "xy") {
			ids = append(ids, 1000)
			i++
			continue
		}
		ids = append(ids, int32(s[i]))
	}
	return ids
}

// An example's texts are tokenized as one text: a prompt and its completion
// give the ids of their concatenation, with no second start mark, and a
// token that spans the boundary carries loss with the completion.
func TestExampleTokenizedWhole(t *testing.T) {
	o := Options{Encoder: markEnc{}, BOS: -1, EOS: eos}
	ex, err := ReadJSONL(strings.NewReader(`{"prompt":"ab","completion":"cd"}`+"\n"+`{"prompt":"ax","completion":"yb"}`), o)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int32{'_', 'a', 'b', 'c', 'd', eos}; !slices.Equal(ex[0].IDs, want) {
		t.Fatalf("ids %v, want %v", ex[0].IDs, want)
	}
	if want := []bool{false, false, false, true, true, true}; !slices.Equal(ex[0].Train, want) {
		t.Fatalf("mask %v, want %v", ex[0].Train, want)
	}
	if want := []int32{'_', 'a', 1000, 'b', eos}; !slices.Equal(ex[1].IDs, want) {
		t.Fatalf("ids %v, want %v", ex[1].IDs, want)
	}
	if want := []bool{false, false, true, true, true}; !slices.Equal(ex[1].Train, want) {
		t.Fatalf("mask %v, want %v", ex[1].Train, want)
	}
}
