package main

import (
	"fmt"
	"strings"

	"github.com/galleon-ml/galleon/data"
	"github.com/galleon-ml/galleon/tokenizer"
)

// ftData is the run's tokenized data: training and validation windows of
// T tokens, and how they were made.
type ftData struct {
	Train, Val []data.Window
	Packed     bool  // windows are packed (text), not one padded example each
	Examples   int   // examples read from -data
	Tokens     int   // trained targets over all training windows
	Pad        int32 // the padding id
}

// dataOptions builds data.Options from the model's tokenizer: its BOS and
// EOS when the tokenizer adds them (Hugging Face's add_bos_token and
// add_eos_token, or its post-processor), EOS always, so the model learns to
// stop, and the chat template for {"messages"} lines.
func dataOptions(tok *tokenizer.Tokenizer) data.Options {
	opts := data.Options{Encoder: tok, BOS: -1, EOS: tok.EOS()}
	if special := tok.EncodeSpecial("a"); len(special) > 0 && tok.BOS() >= 0 && special[0] == tok.BOS() {
		opts.BOS = tok.BOS()
	}
	if tok.ChatTemplate() != "" {
		opts.Chat = chatRenderer{tok: tok, bos: tokenText(tok, opts.BOS), eos: tokenText(tok, opts.EOS)}
	}
	return opts
}

// tokenText returns the text of a special token id, or "" for -1.
func tokenText(tok *tokenizer.Tokenizer, id int32) string {
	if id < 0 {
		return ""
	}
	s, _ := tok.IDToToken(id)
	return s
}

// chatRenderer renders conversations with the tokenizer's chat template.
// Templates write BOS and EOS themselves (e.g. Llama 2's "<s>[INST]" …
// "</s>"); data.Options adds them too, so a leading BOS and a trailing EOS
// the template wrote are taken off the text here and left to data, which
// adds each once (BOS untrained, EOS trained after an assistant turn).
type chatRenderer struct {
	tok      *tokenizer.Tokenizer
	bos, eos string
}

// Render implements data.ChatRenderer.
func (c chatRenderer) Render(ms []data.Message) ([]data.Segment, error) {
	render := func(ms []data.Message, gen bool) (string, error) {
		tm := make([]tokenizer.Message, len(ms))
		for i, m := range ms {
			tm[i] = tokenizer.Message{Role: m.Role, Content: m.Content}
		}
		return c.tok.ApplyChatTemplate(tm, gen)
	}
	segs, err := data.TemplateRenderer(render).Render(ms)
	if err != nil || len(segs) == 0 {
		return segs, err
	}
	if c.bos != "" {
		segs[0].Text = strings.TrimPrefix(segs[0].Text, c.bos)
	}
	if last := &segs[len(segs)-1]; c.eos != "" && last.Train {
		// Whitespace after the marker (a template's newline) goes too:
		// nothing follows EOS.
		last.Text = strings.TrimSuffix(strings.TrimRight(last.Text, " \n"), c.eos)
	}
	return segs, nil
}

// padID is the id padding positions hold: the tokenizer's pad token, else
// its EOS, else 0. Padding is never a target and only follows real tokens,
// so its value does not change the loss.
func padID(tok *tokenizer.Tokenizer) int32 {
	if p := tok.PAD(); p >= 0 {
		return p
	}
	if e := tok.EOS(); e >= 0 {
		return e
	}
	return 0
}

// readWindows reads a data file into windows of T tokens: packed when
// every token carries loss (.txt and {"text"} lines), else one padded
// window per example (prompt/completion and messages, whose masks must
// stay with their example). It also returns the number of examples.
func readWindows(path string, opts data.Options, T int, pad int32, vocab int) ([]data.Window, bool, int, error) {
	exs, err := data.ReadFile(path, opts)
	if err != nil {
		return nil, false, 0, err
	}
	packed := true
	for _, e := range exs {
		for i, id := range e.IDs {
			if int(id) >= vocab || id < 0 {
				return nil, false, 0, fmt.Errorf("finetune: %s: token id %d outside the model's vocabulary of %d: is the tokenizer the model's?", path, id, vocab)
			}
			if i > 0 && !e.Train[i] && !(i == len(e.IDs)-1 && id == opts.EOS) {
				packed = false
			}
		}
	}
	var ws []data.Window
	if packed {
		ws, err = data.Pack(exs, T, pad)
	} else {
		ws, err = data.Pad(exs, T, pad)
	}
	if err != nil {
		return nil, false, 0, fmt.Errorf("finetune: %s: %w", path, err)
	}
	return ws, packed, len(exs), nil
}

// loadData reads the training data and the validation set (-val, or a
// -val-fraction split of the training windows).
func loadData(o *ftOptions, tok *tokenizer.Tokenizer, T, vocab int) (*ftData, error) {
	opts := dataOptions(tok)
	d := &ftData{Pad: padID(tok)}
	ws, packed, n, err := readWindows(o.Data, opts, T, d.Pad, vocab)
	if err != nil {
		return nil, err
	}
	d.Packed, d.Examples = packed, n
	switch {
	case o.Val != "":
		d.Train = ws
		if d.Val, _, _, err = readWindows(o.Val, opts, T, d.Pad, vocab); err != nil {
			return nil, err
		}
	default:
		frac := o.ValFraction
		if frac == -1 {
			frac = 0
			if len(ws) >= 10 {
				frac = 0.1
			}
		}
		if d.Train, d.Val, err = data.Split(ws, frac, o.Seed); err != nil {
			return nil, fmt.Errorf("finetune: %w", err)
		}
	}
	for _, w := range d.Train {
		d.Tokens += w.Trained()
	}
	return d, nil
}
