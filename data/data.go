// Package data turns fine-tuning files into token batches with loss masks.
//
// It reads the four formats of the galleon command — plain text (.txt),
// and JSON lines (.jsonl) holding {"text"}, {"prompt","completion"} or
// {"messages":[{"role","content"}]} — through small interfaces (Encoder,
// ChatRenderer), so it depends on neither the tokenizer nor the model
// package. Targets that carry no loss are IgnoreIndex (-1), the value the
// model's cross-entropy skips.
package data

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// IgnoreIndex is the target of a position that carries no loss; it equals
// internal/nn's IgnoreIndex, which the model's loss skips.
const IgnoreIndex = -1

// ErrData is wrapped by every error about malformed input.
var ErrData = errors.New("data: malformed input")

// Encoder turns text into token ids, without adding special tokens.
type Encoder interface {
	// Encode returns text's token ids.
	Encode(text string) []int32
}

// Message is one turn of a conversation.
type Message struct {
	// Role is who speaks: system, user, assistant or a template's own.
	Role string `json:"role"`
	// Content is the turn's text.
	Content string `json:"content"`
}

// Segment is a piece of rendered chat text; Train marks the pieces whose
// tokens carry loss (the assistant turns).
type Segment struct {
	// Text is the rendered piece.
	Text string
	// Train says whether its tokens carry loss.
	Train bool
}

// ChatRenderer renders a conversation with a chat template into segments.
type ChatRenderer interface {
	// Render returns the conversation's text in order, split where
	// the trained flag changes.
	Render(messages []Message) ([]Segment, error)
}

// Options says how files become token sequences.
type Options struct {
	// Encoder tokenizes text; required.
	Encoder Encoder
	// Chat renders {"messages"} lines; required only when such lines occur.
	Chat ChatRenderer
	// BOS, when non-negative, starts every example; it never carries loss.
	BOS int32
	// EOS, when non-negative, ends every example and carries loss whenever
	// the example's last token does (so a model learns to stop).
	EOS int32
}

// Example is one token sequence; Train[i] says whether token i is a
// target that carries loss when predicted from the tokens before it.
type Example struct {
	// IDs are the tokens.
	IDs []int32
	// Train is parallel to IDs.
	Train []bool
}

// Trained returns how many of e's tokens carry loss as targets; the first
// token is never a target.
func (e Example) Trained() int {
	n := 0
	for i := 1; i < len(e.Train); i++ {
		if e.Train[i] {
			n++
		}
	}
	return n
}

// builder accumulates an example from pieces of text. The pieces are
// tokenized together when the example is finished, never one by one:
// tokenizers that mark the start of their input (SentencePiece's "▁" in
// Llama 2's legacy Metaspace) or merge across a boundary would otherwise
// give a concatenation ids that tokenizing the whole text does not give.
type builder struct {
	opts    Options
	ex      Example
	pending strings.Builder
	bounds  []textBound // where each trained or untrained run of text ends
}

// textBound is the end (byte offset into builder.pending) of a run of text and
// whether the run carries loss.
type textBound struct {
	end   int
	train bool
}

func (b *builder) special(id int32, train bool) {
	b.flush()
	if id >= 0 {
		b.ex.IDs = append(b.ex.IDs, id)
		b.ex.Train = append(b.ex.Train, train)
	}
}

func (b *builder) text(s string, train bool) {
	if s == "" {
		return
	}
	b.pending.WriteString(s)
	if n := len(b.bounds); n > 0 && b.bounds[n-1].train == train {
		b.bounds[n-1].end = b.pending.Len()
		return
	}
	b.bounds = append(b.bounds, textBound{end: b.pending.Len(), train: train})
}

// flush tokenizes the pending text in one call and marks each token with
// the run it starts in. A run's tokens are found by tokenizing the text up
// to its end: the tokens that prefix shares with the whole text's belong to
// the runs so far, and a token that spans a boundary belongs to the later
// run, so loss never covers a token that holds untrained text only.
func (b *builder) flush() {
	if len(b.bounds) == 0 {
		return
	}
	all := b.pending.String()
	ids := b.opts.Encoder.Encode(all)
	b.ex.IDs = append(b.ex.IDs, ids...)
	prev := 0
	for i, bd := range b.bounds {
		end := len(ids)
		if i < len(b.bounds)-1 {
			end = commonPrefix(b.opts.Encoder.Encode(all[:bd.end]), ids)
			// A token cut by the boundary is not in the common prefix.
			end = max(end, prev)
		}
		for range end - prev {
			b.ex.Train = append(b.ex.Train, bd.train)
		}
		prev = end
	}
	b.pending.Reset()
	b.bounds = b.bounds[:0]
}

// commonPrefix returns how many leading ids a and b share.
func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func (b *builder) finish() Example {
	b.flush()
	last := len(b.ex.Train) > 0 && b.ex.Train[len(b.ex.Train)-1]
	b.special(b.opts.EOS, last)
	return b.ex
}

func newBuilder(opts Options) *builder {
	b := &builder{opts: opts}
	b.special(opts.BOS, false)
	return b
}

// ReadFile reads a .txt or .jsonl file into examples.
func ReadFile(path string, opts Options) ([]Example, error) {
	// Stat first and open non-blocking: a FIFO must not hang the read.
	f, _, err := safetensors.OpenRegular(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	switch strings.ToLower(filepath.Ext(path)) {
	case ".txt":
		return ReadText(f, opts)
	case ".jsonl":
		ex, err := ReadJSONL(f, opts)
		if err != nil {
			return nil, fmt.Errorf("data: %s: %w", path, err)
		}
		return ex, nil
	}
	return nil, fmt.Errorf("data: %s: extension is not .txt or .jsonl: %w", path, ErrData)
}

// ReadText reads plain text as one example whose every token carries loss;
// Pack cuts it into windows.
func ReadText(r io.Reader, opts Options) ([]Example, error) {
	if opts.Encoder == nil {
		return nil, fmt.Errorf("data: no encoder: %w", ErrData)
	}
	all, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	b := newBuilder(opts)
	b.text(string(all), true)
	return []Example{b.finish()}, nil
}

// line is the union of the three JSONL record shapes.
type line struct {
	Text       *string   `json:"text"`
	Prompt     *string   `json:"prompt"`
	Completion *string   `json:"completion"`
	Messages   []Message `json:"messages"`
}

// ReadJSONL reads JSON lines, each {"text"}, {"prompt","completion"} or
// {"messages"}; blank lines are skipped. A malformed line is reported with
// its 1-based line number.
func ReadJSONL(r io.Reader, opts Options) ([]Example, error) {
	if opts.Encoder == nil {
		return nil, fmt.Errorf("data: no encoder: %w", ErrData)
	}
	var out []Example
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		raw, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(raw)) > 0 {
			ex, perr := parseLine(raw, opts)
			if perr != nil {
				return nil, fmt.Errorf("line %d: %w", n, perr)
			}
			out = append(out, ex)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("data: line %d: %w", n, err)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no examples: %w", ErrData)
	}
	return out, nil
}

func parseLine(raw []byte, opts Options) (Example, error) {
	var l line
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return Example{}, fmt.Errorf("%w: %v", ErrData, err)
	}
	if dec.More() {
		return Example{}, fmt.Errorf("more than one JSON value: %w", ErrData)
	}
	b := newBuilder(opts)
	switch {
	case l.Text != nil && l.Prompt == nil && l.Completion == nil && l.Messages == nil:
		b.text(*l.Text, true)
	case l.Prompt != nil && l.Completion != nil && l.Text == nil && l.Messages == nil:
		b.text(*l.Prompt, false)
		b.text(*l.Completion, true)
	case l.Messages != nil && l.Text == nil && l.Prompt == nil && l.Completion == nil:
		if opts.Chat == nil {
			return Example{}, fmt.Errorf("messages need a chat template: %w", ErrData)
		}
		for i, m := range l.Messages {
			if m.Role == "" {
				return Example{}, fmt.Errorf("message %d has no role: %w", i, ErrData)
			}
		}
		segs, err := opts.Chat.Render(l.Messages)
		if err != nil {
			return Example{}, fmt.Errorf("chat template: %w: %w", ErrData, err)
		}
		for _, s := range segs {
			b.text(s.Text, s.Train)
		}
	default:
		return Example{}, fmt.Errorf(`want exactly one of {"text"}, {"prompt","completion"} or {"messages"}: %w`, ErrData)
	}
	ex := b.finish()
	if ex.Trained() == 0 {
		return Example{}, fmt.Errorf("no token carries loss: %w", ErrData)
	}
	return ex, nil
}

// RenderFunc renders a conversation to text with a chat template, adding
// the assistant's turn header at the end when addGenerationPrompt is set
// (as Hugging Face's apply_chat_template does).
type RenderFunc func(messages []Message, addGenerationPrompt bool) (string, error)

// TemplateRenderer is a ChatRenderer over any template function. It finds
// each assistant turn's text by rendering growing prefixes of the
// conversation: turn i is what rendering messages[:i+1] adds to rendering
// messages[:i] with the generation prompt, so the turn header stays
// untrained and the content with its end-of-turn marker is trained.
type TemplateRenderer RenderFunc

// Render implements ChatRenderer. It fails when the template does not
// render prefixes of the conversation as prefixes of its text.
func (r TemplateRenderer) Render(messages []Message) ([]Segment, error) {
	var segs []Segment
	done := ""
	emit := func(text string, train bool, i int) error {
		if !strings.HasPrefix(text, done) {
			return fmt.Errorf("data: chat template renders message %d's prefix differently: %w", i, ErrData)
		}
		if len(text) > len(done) {
			segs = append(segs, Segment{Text: text[len(done):], Train: train})
		}
		done = text
		return nil
	}
	for i, m := range messages {
		if m.Role == "assistant" {
			head, err := r(messages[:i], true)
			if err != nil {
				return nil, err
			}
			if err := emit(head, false, i); err != nil {
				return nil, err
			}
		}
		text, err := r(messages[:i+1], false)
		if err != nil {
			return nil, err
		}
		if err := emit(text, m.Role == "assistant", i); err != nil {
			return nil, err
		}
	}
	return segs, nil
}
