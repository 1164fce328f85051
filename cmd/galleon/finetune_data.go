package main

import (
	"fmt"

	"github.com/galleon-ml/galleon/data"
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

// padID is the id padding positions hold: the tokenizer's EOS, else 0.
// Padding is never a target and only follows real tokens, so its value
// does not change the loss.
func padID(tok textTokenizer) int32 {
	return max(tok.EOS(), 0)
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
func loadData(o *ftOptions, l *loaded, T int) (*ftData, error) {
	opts, vocab := l.dataOptions(), l.Model.Config.Vocab
	d := &ftData{Pad: padID(l.Tok)}
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
