package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
)

// sampleFlags are the sampling flags generate and chat share.
type sampleFlags struct {
	maxTokens   int
	temperature float64
	topK        int
	topP        float64
	seed        uint64
}

// register adds -max-tokens, -temperature, -top-k, -top-p and -seed to fs.
func (s *sampleFlags) register(fs *flag.FlagSet, maxTokens int) {
	fs.IntVar(&s.maxTokens, "max-tokens", maxTokens, "most new tokens to generate (fewer when an end-of-sequence token comes first)")
	fs.Float64Var(&s.temperature, "temperature", 0.8, "sampling temperature; 0 picks the most likely token (greedy)")
	fs.IntVar(&s.topK, "top-k", 40, "sample among the K most likely tokens; 0 keeps all")
	fs.Float64Var(&s.topP, "top-p", 0.95, "then among the smallest set whose probability reaches P; 1 keeps all")
	fs.Uint64Var(&s.seed, "seed", 1, "sampling seed: the same seed, model and prompt give the same text")
}

// check returns the usage error of out-of-range sampling flags.
func (s *sampleFlags) check(cmd string) error {
	switch {
	case s.maxTokens < 1:
		return usageError{fmt.Sprintf("%s: -max-tokens %d must be at least 1", cmd, s.maxTokens)}
	case !(s.temperature >= 0) || s.temperature > 1e6:
		return usageError{fmt.Sprintf("%s: -temperature %v must be between 0 and 1e6", cmd, s.temperature)}
	case s.topK < 0:
		return usageError{fmt.Sprintf("%s: -top-k %d is negative", cmd, s.topK)}
	case !(s.topP >= 0 && s.topP <= 1):
		return usageError{fmt.Sprintf("%s: -top-p %v must be in [0, 1]", cmd, s.topP)}
	}
	return nil
}

// options returns the sampling options for l: they stop at its EOS ids and
// sample only ids its tokenizer can decode.
func (s *sampleFlags) options(l *loaded) model.SampleOptions {
	return model.SampleOptions{Temperature: s.temperature, TopK: s.topK, TopP: s.topP, Seed: s.seed, Stop: l.EOS, Vocab: l.Tok.VocabSize()}
}

// generateResult is generate's -json object.
type generateResult struct {
	Text             string  `json:"text"`             // the generated text, without the end-of-sequence token
	IDs              []int32 `json:"ids"`              // the generated tokens, the end-of-sequence token included
	PromptTokens     int     `json:"prompt_tokens"`    // tokens of the prompt (with the tokenizer's BOS)
	GeneratedTokens  int     `json:"generated_tokens"` // len(IDs)
	StopReason       string  `json:"stop_reason"`      // "eos" or "max_tokens"
	PrefillSeconds   float64 `json:"prefill_seconds"`  // the prompt's forward pass and the first token
	PrefillPerSecond float64 `json:"prefill_tokens_per_second"`
	DecodeSeconds    float64 `json:"decode_seconds"` // every token after the first
	DecodePerSecond  float64 `json:"decode_tokens_per_second"`
}

func generateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	var base baseFlags
	base.register(fs)
	var sf sampleFlags
	sf.register(fs, 128)
	prompt := fs.String("prompt", "", "`text` to continue (required)")
	jsonOut := fs.Bool("json", false, "print the results as one JSON object on the last line")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := base.check("generate"); err != nil {
		return err
	}
	if err := sf.check("generate"); err != nil {
		return err
	}
	if *prompt == "" {
		return usageError{"generate: -prompt is required"}
	}
	l, err := loadBase(ctx, base)
	if err != nil {
		return err
	}
	ids := l.Tok.EncodePrompt(*prompt)
	res, err := generateText(ctx, l, ids, sf.maxTokens, sf.options(l), stdout)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	if *jsonOut {
		return report.PrintJSON(stdout, res)
	}
	return nil
}

// generateText continues prompt with l's model and streams the text to w
// as each token is sampled (textOut); an end-of-sequence token (one of
// opts.Stop) ends it and is not printed.
func generateText(ctx context.Context, l *loaded, prompt []int32, maxTokens int, opts model.SampleOptions, w io.Writer) (generateResult, error) {
	res := generateResult{PromptTokens: len(prompt)}
	o := newTextOut(l, w, opts.Stop)
	opts.OnToken = o.onToken
	start := time.Now()
	out, err := l.Model.Generate(ctx, prompt, maxTokens, opts)
	end := time.Now()
	if err != nil {
		return res, err
	}
	if res.Text, err = o.finish(); err != nil {
		return res, err
	}
	res.IDs, res.GeneratedTokens, res.StopReason = out, len(out), stopReason(out, opts.Stop)
	res.PrefillSeconds = o.first.Sub(start).Seconds()
	res.DecodeSeconds = end.Sub(o.first).Seconds()
	res.PrefillPerSecond = rate(len(prompt), res.PrefillSeconds)
	res.DecodePerSecond = rate(len(out)-1, res.DecodeSeconds)
	return res, nil
}

// textOut prints a generation's text to w as its tokens are sampled,
// through the tokenizer's streaming decoder, which holds back the bytes of
// an incomplete UTF-8 character; end-of-sequence ids are not printed.
type textOut struct {
	w      io.Writer
	stream tokenStream
	stop   []int32
	text   []byte
	first  time.Time // when the first token was sampled: the end of the prefill
}

func newTextOut(l *loaded, w io.Writer, stop []int32) *textOut {
	return &textOut{w: w, stream: l.Tok.NewStream(), stop: stop}
}

// onToken is a model.SampleOptions.OnToken.
func (o *textOut) onToken(id int32) error {
	if o.first.IsZero() {
		o.first = time.Now()
	}
	if slices.Contains(o.stop, id) {
		return nil
	}
	piece, err := o.stream.Add(id)
	if err != nil {
		return err
	}
	o.text = append(o.text, piece...)
	_, err = io.WriteString(o.w, piece)
	return err
}

// finish prints the text the decoder still holds and returns the whole
// text printed.
func (o *textOut) finish() (string, error) {
	rest := o.stream.Flush()
	o.text = append(o.text, rest...)
	_, err := io.WriteString(o.w, rest)
	return string(o.text), err
}

// stopReason says why generation of out ended: "eos" when its last token is
// one of stop, else "max_tokens".
func stopReason(out, stop []int32) string {
	if len(out) > 0 && slices.Contains(stop, out[len(out)-1]) {
		return "eos"
	}
	return "max_tokens"
}

// rate returns n/seconds, or 0 when either is not positive.
func rate(n int, seconds float64) float64 {
	if n <= 0 || seconds <= 0 {
		return 0
	}
	return float64(n) / seconds
}
