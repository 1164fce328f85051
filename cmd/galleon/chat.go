package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

// chatTurn is one reply in chat's -json object.
type chatTurn struct {
	Text         string  `json:"text"`          // the reply, without the end-of-sequence token
	IDs          []int32 `json:"ids"`           // the generated tokens, the end-of-sequence token included
	PromptTokens int     `json:"prompt_tokens"` // tokens of the whole rendered conversation before the reply
	Prefilled    int     `json:"prefilled"`     // of those, the ones run this turn; the rest came from the KV cache
	StopReason   string  `json:"stop_reason"`   // "eos", "max_tokens", "context_full" or "interrupted"
	Dropped      int     `json:"dropped_messages,omitempty"`
}

// chatResult is chat's -json object.
type chatResult struct {
	Turns           []chatTurn `json:"turns"`
	PrefilledTokens int        `json:"prefilled_tokens"` // prompt tokens run, all turns
	ReusedTokens    int        `json:"reused_tokens"`    // prompt tokens taken from the KV cache, all turns
	GeneratedTokens int        `json:"generated_tokens"`
	DecodePerSecond float64    `json:"decode_tokens_per_second"` // every token after each reply's first
	ContextTokens   int        `json:"context_tokens"`           // tokens in the cache at the end
	Capacity        int        `json:"context_capacity"`
}

func chatCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return chat(ctx, args, os.Stdin, stdout, stderr)
}

// chat runs a conversation: every line of stdin is a user turn, answered on
// stdout as the tokens are sampled, until EOF or a line "/exit".
//
// The conversation is rendered with the tokenizer's chat template every
// turn, as a stateless server would render it, but one KV cache lives for
// the whole session: only the tokens after the longest common prefix of
// what the cache holds and the new rendering are run, which is normally the
// new user turn and the template's close of the previous reply. When the
// rendering plus -max-tokens no longer fits the cache (-ctx), the oldest
// messages after the system prompt are dropped, turn by turn, and the
// shortened conversation is run again from where it first differs (the
// cost of a slide is one prefill); a reply that fills the cache stops
// there and says so on stderr.
func chat(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	var base baseFlags
	base.register(fs)
	var sf sampleFlags
	sf.register(fs, 512)
	system := fs.String("system", "", "system prompt `text` (none by default)")
	capacity := fs.Int("ctx", 4096, "KV cache size in tokens (at most the model's context); older turns are dropped to fit")
	jsonOut := fs.Bool("json", false, "after the conversation, print its results as one JSON object on the last line")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := base.check("chat"); err != nil {
		return err
	}
	if err := sf.check("chat"); err != nil {
		return err
	}
	if *capacity < 2 {
		return usageError{fmt.Sprintf("chat: -ctx %d must be at least 2", *capacity)}
	}
	l, err := loadBase(ctx, base)
	if err != nil {
		return err
	}
	s, err := newChatSession(l, base.Model, *system, min(*capacity, l.Model.Config.SeqLen), sf)
	if err != nil {
		return err
	}
	interactive := report.IsTerminal(stdin) // a "> " prompt on stderr; none for pipes
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the reader when the conversation ends first
	lines := readLines(ctx, stdin)
	// Ctrl-C (ctx) ends the conversation as EOF does: at the prompt, or
	// during a reply, which keeps what was printed.
loop:
	for ctx.Err() == nil {
		if interactive {
			fmt.Fprint(stderr, "> ")
		}
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			break loop
		case line, ok = <-lines:
		}
		line = strings.TrimSpace(line)
		switch {
		case !ok || line == "/exit" || line == "/quit":
			break loop
		case line == "":
		case line == "/reset":
			s.reset()
		default:
			if err := s.turn(ctx, line, stdout, stderr); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "[interrupted]")
	}
	if *jsonOut {
		s.res.ContextTokens, s.res.Capacity = len(s.cached), s.inf.Cap
		return report.PrintJSON(stdout, s.res)
	}
	return nil
}

// chatSession is a conversation and the KV cache that holds it.
type chatSession struct {
	l         *loaded
	sf        sampleFlags
	system    []tokenizer.Message // the system prompt, if any
	history   []tokenizer.Message // the turns after it
	inf       *model.Inference
	cached    []int32 // the tokens in inf's cache, in order
	res       chatResult
	decodeDur time.Duration
	decodeN   int
}

func newChatSession(l *loaded, path, system string, capacity int, sf sampleFlags) (*chatSession, error) {
	s := &chatSession{l: l, sf: sf, res: chatResult{Turns: []chatTurn{}}}
	if system != "" {
		s.system = []tokenizer.Message{{Role: "system", Content: system}}
	}
	// Render once up front, so a model without a chat template fails
	// before the first line is read.
	if _, err := s.render(append(slices.Clone(s.system), tokenizer.Message{Role: "user", Content: "hi"})); err != nil {
		if errors.Is(err, tokenizer.ErrNoChatTemplate) {
			return nil, fmt.Errorf("chat: %s has no chat template (tokenizer_config.json's chat_template); use galleon generate", path)
		}
		return nil, fmt.Errorf("chat: %w", err)
	}
	var err error
	if s.inf, err = l.Model.NewInference(1, capacity); err != nil {
		return nil, err
	}
	return s, nil
}

// render returns the token ids of msgs rendered with the chat template,
// with the assistant's header appended.
func (s *chatSession) render(msgs []tokenizer.Message) ([]int32, error) {
	text, err := s.l.Tok.ApplyChatTemplate(msgs, true)
	if err != nil {
		return nil, err
	}
	return s.l.Tok.Encode(text), nil
}

// reset forgets the conversation (the system prompt stays); the cache is
// reused from where the new rendering agrees with it.
func (s *chatSession) reset() { s.history = s.history[:0] }

// turn answers one user message, streaming the reply to stdout.
func (s *chatSession) turn(ctx context.Context, text string, stdout, stderr io.Writer) error {
	s.history = append(s.history, tokenizer.Message{Role: "user", Content: text})
	var t chatTurn
	var ids []int32
	for {
		var err error
		if ids, err = s.render(append(slices.Clone(s.system), s.history...)); err != nil {
			return fmt.Errorf("chat: %w", err)
		}
		// Keep room for the reply: drop the oldest exchange (a user
		// message and its reply, so that roles still alternate, as
		// templates such as Llama 2's require) while others remain.
		if len(ids)+s.sf.maxTokens <= s.inf.Cap || len(s.history) < 3 {
			break
		}
		s.history = s.history[2:]
		t.Dropped += 2
	}
	if t.Dropped > 0 {
		fmt.Fprintf(stderr, "[context: dropped the %d oldest messages to fit %d tokens]\n", t.Dropped, s.inf.Cap)
	}
	if len(ids) >= s.inf.Cap {
		s.history = s.history[:len(s.history)-1]
		fmt.Fprintf(stderr, "[context full: this message renders to %d tokens, the cache holds %d (-ctx); not answered]\n", len(ids), s.inf.Cap)
		return nil
	}
	// Run only what the cache does not hold yet (at least one token, for
	// the logits the first reply token is sampled from).
	n := 0
	for n < len(s.cached) && n < len(ids)-1 && s.cached[n] == ids[n] {
		n++
	}
	if err := s.inf.Truncate(n); err != nil {
		return err
	}
	s.cached = append(s.cached[:n], ids[n:]...)
	t.PromptTokens, t.Prefilled = len(ids), len(ids)-n

	opts := s.sf.options(s.l)
	opts.Seed += uint64(len(s.res.Turns)) // a fresh draw each turn, reproducible
	o := newTextOut(s.l, stdout, opts.Stop)
	opts.OnToken = o.onToken
	out, err := s.inf.Generate(ctx, ids[n:], s.sf.maxTokens, opts)
	end := time.Now()
	full := errors.Is(err, model.ErrContextFull)
	interrupted := ctx.Err() != nil && errors.Is(err, ctx.Err())
	if err != nil && !full && !interrupted {
		return err
	}
	if t.Text, err = o.finish(); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	t.IDs, t.StopReason = out, stopReason(out, opts.Stop)
	switch {
	case interrupted:
		t.StopReason = "interrupted"
	case full:
		t.StopReason = "context_full"
		fmt.Fprintf(stderr, "[context full: the reply stopped at %d tokens; older turns are dropped next turn]\n", len(out))
	}
	// Every reply token but the last went through the cache.
	if len(out) > 0 {
		s.cached = append(s.cached, out[:len(out)-1]...)
	}
	if !o.first.IsZero() && len(out) > 1 {
		s.decodeDur += end.Sub(o.first)
		s.decodeN += len(out) - 1
	}
	s.history = append(s.history, tokenizer.Message{Role: "assistant", Content: t.Text})
	s.res.Turns = append(s.res.Turns, t)
	s.res.PrefilledTokens += t.Prefilled
	s.res.ReusedTokens += t.PromptTokens - t.Prefilled
	s.res.GeneratedTokens += len(out)
	s.res.DecodePerSecond = rate(s.decodeN, s.decodeDur.Seconds())
	return nil
}

// readLines sends stdin's lines on a channel, closed at EOF, so that the
// conversation loop can also wait for ctx (Ctrl-C) while no line comes.
func readLines(ctx context.Context, r io.Reader) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				select {
				case ch <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}
