package tokenizer

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// tinyByteLevel is a small GPT-2-style file: all 256 byte characters, a few
// merges, an added special token.
func tinyByteLevel(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := FromJSON([]byte(tinyFile()), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func tinyFile() string {
	var sb strings.Builder
	sb.WriteString(`{"added_tokens":[{"id":300,"content":"<|eot|>","special":true}],
"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false},
"decoder":{"type":"ByteLevel"},
"model":{"type":"BPE","vocab":{`)
	for b := 0; b < 256; b++ {
		sb.WriteString(`"` + jsonEscape(string(bytesToUnicode[b])) + `":` + strconv.Itoa(b) + `,`)
	}
	sb.WriteString(`"Ġt":256,"he":257,"Ġthe":258},"merges":["Ġ t","h e","Ġt he"]}}`)
	return sb.String()
}

func jsonEscape(s string) string {
	switch s {
	case `"`:
		return `\"`
	case `\`:
		return `\\`
	}
	return s
}

func TestTinyEncodeDecode(t *testing.T) {
	tk := tinyByteLevel(t)
	got := tk.Encode("the the<|eot|>")
	// "the" at the start has no space: t, he; then Ġthe and the added token.
	want := []int32{mustID(t, tk, "t"), 257, 258, 300}
	if !slices.Equal(got, want) {
		t.Fatalf("Encode = %v, want %v", got, want)
	}
	s, err := tk.Decode(got)
	if err != nil || s != "the the<|eot|>" {
		t.Fatalf("Decode = %q, %v", s, err)
	}
	if s, _ := tk.DecodeSkipSpecial(got); s != "the the" {
		t.Fatalf("DecodeSkipSpecial = %q", s)
	}
	if !tk.IsSpecial(300) || tk.IsSpecial(258) {
		t.Fatal("IsSpecial")
	}
	if tok, ok := tk.IDToToken(258); !ok || tok != "Ġthe" {
		t.Fatalf("IDToToken(258) = %q, %v", tok, ok)
	}
	if _, ok := tk.IDToToken(1000); ok {
		t.Fatal("IDToToken(1000) ok")
	}
}

func mustID(t testing.TB, tk *Tokenizer, tok string) int32 {
	id, ok := tk.TokenToID(tok)
	if !ok {
		t.Fatalf("no token %q", tok)
	}
	return id
}

// TestInvalidUTF8 encodes arbitrary bytes with a byte-level file: nothing is
// lost, and decoding gives the bytes back.
func TestInvalidUTF8(t *testing.T) {
	tk := tinyByteLevel(t)
	for _, s := range []string{"\xff", "a\xc3", "\xe2\x82", "\xed\xa0\x80 surrogate", "ok\x00\x80\xfe\xff the"} {
		ids := tk.Encode(s)
		got, err := tk.Decode(ids)
		if err != nil || got != s {
			t.Errorf("Decode(Encode(%q)) = %q, %v", s, got, err)
		}
	}
}

func TestDecodeOutOfRange(t *testing.T) {
	tk := tinyByteLevel(t)
	for _, id := range []int32{-1, 259, 299, 301, 1 << 30} {
		if _, err := tk.Decode([]int32{1, id}); !errors.Is(err, ErrUnknownID) {
			t.Errorf("Decode(%d): err = %v, want ErrUnknownID", id, err)
		}
		if _, err := tk.NewDecoder().Add(id); !errors.Is(err, ErrUnknownID) {
			t.Errorf("Decoder.Add(%d): err = %v", id, err)
		}
	}
}

// TestLoadErrors: malformed and hostile files are errors that say what is wrong.
func TestLoadErrors(t *testing.T) {
	base := `"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}`
	cases := map[string]string{
		"not json":                 `{`,
		"no model":                 `{}`,
		"Unigram":                  `{"model":{"type":"Unigram","vocab":[]}}`,
		"negative id":              `{"model":{"type":"BPE","vocab":{"a":-1},"merges":[]}}`,
		"huge id":                  `{"model":{"type":"BPE","vocab":{"a":4000000000},"merges":[]}}`,
		"sparse id":                `{"model":{"type":"BPE","vocab":{"a":0,"b":9999999},"merges":[]}}`,
		"duplicate id":             `{"model":{"type":"BPE","vocab":{"a":0,"b":0},"merges":[]}}`,
		"merge out of vocab":       `{"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}}`,
		"merge one part":           `{"model":{"type":"BPE","vocab":{"a":0},"merges":["a"]}}`,
		"merge three parts":        `{"model":{"type":"BPE","vocab":{"a":0},"merges":[["a","a","a"]]}}`,
		"unk missing":              `{"model":{"type":"BPE","vocab":{"a":0},"merges":[],"unk_token":"<unk>"}}`,
		"WordPiece decoder":        `{"decoder":{"type":"WordPiece"},` + base + `}`,
		"BertNormalizer":           `{"normalizer":{"type":"BertNormalizer"},` + base + `}`,
		"Whitespace":               `{"pre_tokenizer":{"type":"Whitespace"},` + base + `}`,
		"MergedWithPrevious":       `{"pre_tokenizer":{"type":"Split","pattern":{"String":" "},"behavior":"MergedWithPrevious"},` + base + `}`,
		"RobertaProcessing":        `{"post_processor":{"type":"RobertaProcessing"},` + base + `}`,
		"template unknown special": `{"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}}]},` + base + `}`,
		"added conflict":           `{"added_tokens":[{"id":0,"content":"zz"}],` + base + `}`,
		"added empty":              `{"added_tokens":[{"id":5,"content":""}],` + base + `}`,
		"dropout":                  `{"model":{"type":"BPE","vocab":{"a":0},"merges":[],"dropout":0.1}}`,
		"bad regex":                `{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"("},"behavior":"Isolated"},` + base + `}`,
	}
	for name, js := range cases {
		if _, err := FromJSON([]byte(js), nil); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "tokenizer: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
	_, err := FromJSON([]byte(`{"decoder":{"type":"WordPiece"},`+base+`}`), nil)
	if err == nil || !strings.Contains(err.Error(), "WordPiece") {
		t.Errorf("unimplemented component not named: %v", err)
	}
}

func TestLoadMissingDir(t *testing.T) {
	if _, err := Load(t.TempDir()); err == nil {
		t.Fatal("Load of an empty directory succeeded")
	}
}

// TestStreamingDecoder feeds ids one at a time: the pieces join to Decode's
// text and no piece ends inside a UTF-8 character.
func TestStreamingDecoder(t *testing.T) {
	texts := []string{"héllo wörld 😀 👨‍👩‍👧 日本語 the end", "  spaces\n\nand\ttabs ", "e\u0301 ﬁ"}
	check := func(t *testing.T, tk *Tokenizer) {
		for _, text := range texts {
			ids := tk.Encode(text)
			want, err := tk.Decode(ids)
			if err != nil {
				t.Fatal(err)
			}
			d := tk.NewDecoder()
			var sb strings.Builder
			for _, id := range ids {
				s, err := d.Add(id)
				if err != nil {
					t.Fatal(err)
				}
				if !utf8.ValidString(s) {
					t.Fatalf("%q: piece %q is not valid UTF-8", text, s)
				}
				sb.WriteString(s)
			}
			sb.WriteString(d.Flush())
			if sb.String() != want {
				t.Errorf("streamed %q, Decode %q", sb.String(), want)
			}
		}
	}
	t.Run("tiny", func(t *testing.T) { check(t, tinyByteLevel(t)) })
	for _, name := range []string{"gpt2", "llama2", "llama3"} {
		t.Run(name, func(t *testing.T) { check(t, realTokenizer(t, name)) })
	}
}

func TestEncodeBatch(t *testing.T) {
	tk := tinyByteLevel(t)
	texts := []string{"the", "", "a the b", "<|eot|>x", strings.Repeat("the ", 100)}
	got, err := tk.EncodeBatch(context.Background(), texts, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range texts {
		if !slices.Equal(got[i], tk.Encode(s)) {
			t.Errorf("batch %d differs", i)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tk.EncodeBatch(ctx, texts, false); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled batch: %v", err)
	}
}

// The hand-written splitters must agree with the patterns they replace.
// regexp2 runs the original patterns with \s spelled out as each reference
// compiles it (JavaScript's \s for GPT-2's ByteLevel, White_Space for Split).
const (
	jsSpaceClass = `\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff`
	wsClass      = `\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000`
	contractions = `'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]`
)

func spelled(p, class string) *regexp2.Regexp {
	p = strings.ReplaceAll(p, `(?i:'s|'t|'re|'ve|'m|'ll|'d)`, contractions)
	p = strings.ReplaceAll(p, `[^\s\p{L}\p{N}]`, `[^`+class+`\p{L}\p{N}]`)
	p = strings.ReplaceAll(p, `(?!\S)`, `(?![^`+class+`])`)
	p = strings.ReplaceAll(p, `\s`, `[`+class+`]`)
	return regexp2.MustCompile(p, regexp2.Unicode)
}

var (
	reGPT2   = spelled(gpt2Pattern, jsSpaceClass)
	reLlama3 = spelled(llama3Pattern, wsClass)
	reQwen   = spelled(qwenPattern, wsClass)
)

func regexpPieces(re *regexp2.Regexp, s string) []string {
	var out []string
	for _, m := range regexpMatches(re, s, nil) {
		out = append(out, s[m[0]:m[1]])
	}
	return out
}

// tablesAgree reports whether Go's Unicode tables (which regexp2 uses) class
// every character of s as the reference's do (unicode_tables.go).
func tablesAgree(s string) bool {
	for _, r := range s {
		if unicode.IsLetter(r) != unicode.Is(jsLetter, r) || unicode.IsNumber(r) != unicode.Is(jsNumber, r) {
			return false
		}
	}
	return true
}

func checkSplit(t *testing.T, s string) {
	if !utf8.ValidString(s) || !tablesAgree(s) {
		return
	}
	for _, c := range []struct {
		name string
		re   *regexp2.Regexp
		f    func(string) []string
	}{
		{"gpt2", reGPT2, func(s string) []string { return splitGPT2(s, nil) }},
		{"llama3", reLlama3, func(s string) []string { return splitLlama3(s, 3, nil) }},
		{"qwen", reQwen, func(s string) []string { return splitLlama3(s, 1, nil) }},
	} {
		got, want := c.f(s), regexpPieces(c.re, s)
		if !slices.Equal(got, want) {
			t.Errorf("%s split of %q:\n got %q\nwant %q", c.name, s, got, want)
		}
	}
}

func TestSplittersMatchRegexp(t *testing.T) {
	for _, s := range readCorpus(t) {
		checkSplit(t, s)
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{"Hello world", "a  b\n\n c", "I'LL 'S 's x'd", "123456 ٣٤", " \t\r\n x", "😀 a\u00a0b\ufeff\u0085", "'ab'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkSplit(t, s) })
}

// FuzzLoad feeds mutated tokenizer files to FromJSON: an error or a working
// tokenizer, never a panic.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(tinyFile()), "the x")
	f.Add([]byte(`{"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},"model":{"type":"BPE","vocab":{"<unk>":0,"▁":1,"a":2,"▁a":3,"<0x41>":4},"merges":["▁ a"],"unk_token":"<unk>","byte_fallback":true,"fuse_unk":true}}`), "a a A b")
	f.Add([]byte(`{"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"Split","pattern":{"Regex":"\\s+"},"behavior":"Removed"},{"type":"Metaspace","prepend_scheme":"first"}]},"model":{"type":"BPE","vocab":{"a":0,"1":1},"merges":[]}}`), "a1 22 a")
	f.Fuzz(func(t *testing.T, js []byte, text string) {
		tk, err := FromJSON(js, nil)
		if err != nil {
			return
		}
		ids := tk.Encode(text)
		tk.EncodeSpecial(text)
		if _, err := tk.Decode(ids); err != nil {
			t.Fatalf("Decode of Encode's ids: %v", err)
		}
	})
}

// FuzzEncode encodes arbitrary strings with the tiny byte-level file and, when
// fetched, the real files: no panics, ids in range, and byte-level round trips.
func FuzzEncode(f *testing.F) {
	for _, s := range readCorpus(f) {
		f.Add(s)
	}
	f.Add("\xff\xfe<|eot|>\xc3")
	tiny := tinyByteLevel(f)
	var real []*Tokenizer
	for _, name := range []string{"gpt2", "llama2", "llama3"} {
		if tk := optionalTokenizer(name); tk != nil {
			real = append(real, tk)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i, tk := range append([]*Tokenizer{tiny}, real...) {
			ids := tk.Encode(s)
			for _, id := range ids {
				if _, ok := tk.IDToToken(id); !ok {
					t.Fatalf("tokenizer %d: id %d out of range", i, id)
				}
			}
			got, err := tk.Decode(ids)
			if err != nil {
				t.Fatal(err)
			}
			if tk.model.byteLevel && got != s {
				t.Fatalf("tokenizer %d: Decode(Encode(%q)) = %q", i, s, got)
			}
		}
	})
}
