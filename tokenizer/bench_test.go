package tokenizer

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	tiktoken "github.com/tiktoken-go/tokenizer"
)

var (
	benchOnce sync.Once
	benchText string
)

// benchCorpus is about 4 MB of text: Go source from GOROOT (code, comments
// and prose in doc comments) followed by the parity corpus repeated, the same
// bytes for every tokenizer in one run.
func benchCorpus(tb testing.TB) string {
	benchOnce.Do(func() {
		var sb strings.Builder
		// The toolchain's own sources: `go test` puts its GOROOT/bin
		// first on PATH, so this is the go that runs the benchmark.
		goroot, err := exec.Command("go", "env", "GOROOT").Output()
		if err != nil {
			tb.Fatalf("go env GOROOT: %v", err)
		}
		root := filepath.Join(strings.TrimSpace(string(goroot)), "src")
		for _, pkg := range []string{"net/http", "fmt", "strings", "strconv", "go/parser", "go/types", "runtime"} {
			files, _ := filepath.Glob(filepath.Join(root, pkg, "*.go"))
			slices.Sort(files)
			for _, f := range files {
				if sb.Len() > 3<<20 {
					break
				}
				b, err := os.ReadFile(f)
				if err == nil {
					sb.Write(b)
				}
			}
		}
		b, err := os.ReadFile("testdata/corpus.json")
		if err == nil {
			for sb.Len() < 4<<20 {
				sb.Write(b)
			}
		}
		benchText = sb.String()
	})
	if len(benchText) < 1<<20 {
		tb.Skip("benchmark corpus unavailable (GOROOT sources missing)")
	}
	return benchText
}

// BenchmarkEncode encodes the same text with each tokenizer; gpt2-tiktoken is
// github.com/tiktoken-go/tokenizer's r50k_base (GPT-2's encoding) on the same
// bytes, the speed anchor.
func BenchmarkEncode(b *testing.B) {
	text := benchCorpus(b)
	for _, name := range []string{"gpt2", "llama3", "qwen3", "llama2"} {
		b.Run(name, func(b *testing.B) {
			tk := realTokenizer(b, name)
			ids := tk.AppendEncode(nil, text) // warm the word cache
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				ids = tk.AppendEncode(ids[:0], text)
			}
			b.ReportMetric(float64(len(ids))*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
		if name == "gpt2" {
			b.Run("gpt2-tiktoken", func(b *testing.B) {
				codec, err := tiktoken.Get(tiktoken.R50kBase)
				if err != nil {
					b.Fatal(err)
				}
				ids, _, _ := codec.Encode(text)
				b.SetBytes(int64(len(text)))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					ids, _, _ = codec.Encode(text)
				}
				b.ReportMetric(float64(len(ids))*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

// BenchmarkEncodeBatch encodes the text cut into 4 KB documents on all cores.
func BenchmarkEncodeBatch(b *testing.B) {
	text := benchCorpus(b)
	var docs []string
	for i := 0; i < len(text); i += 4096 {
		docs = append(docs, text[i:min(i+4096, len(text))])
	}
	tk := realTokenizer(b, "gpt2")
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := tk.EncodeBatch(context.Background(), docs, false); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTiktokenAgrees checks the GPT-2 file against tiktoken-go's r50k_base on
// the benchmark text, so the speed comparison compares equal work.
func TestTiktokenAgrees(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	tk := realTokenizer(t, "gpt2")
	text := benchCorpus(t)
	if len(text) > 1<<20 {
		text = text[:1<<20]
	}
	text = strings.ToValidUTF8(text, "")
	codec, err := tiktoken.Get(tiktoken.R50kBase)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := codec.Encode(text)
	if err != nil {
		t.Fatal(err)
	}
	got := tk.Encode(text)
	if len(got) != len(want) {
		t.Fatalf("galleon %d tokens, tiktoken %d", len(got), len(want))
	}
	for i := range got {
		if uint(got[i]) != want[i] {
			t.Fatalf("token %d: galleon %d, tiktoken %d", i, got[i], want[i])
		}
	}
}

// BenchmarkSplit compares the hand-written splitters with regexp2 running the
// same patterns (with \s spelled out as the reference compiles it), on the
// benchmark text: the splitter is the hot path of byte-level encoding.
func BenchmarkSplit(b *testing.B) {
	text := strings.ToValidUTF8(benchCorpus(b), "")
	if len(text) > 1<<20 {
		text = text[:1<<20] // regexp2 is slow; 1 MB keeps the run short
	}
	var out []string
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"gpt2-hand", func() { out = splitGPT2(text, out[:0]) }},
		{"gpt2-regexp2", func() { regexpMatches(reGPT2, text, nil) }},
		{"llama3-hand", func() { out = splitLlama3(text, 3, out[:0]) }},
		{"llama3-regexp2", func() { regexpMatches(reLlama3, text, nil) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				c.f()
			}
		})
	}
}
