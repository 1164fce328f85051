package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	"github.com/galleon-ml/galleon/data"
	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
)

// byteEncoder is the byte-level tokenizer of galleon checkpoints.
type byteEncoder struct{}

func (byteEncoder) Encode(s string) []int32 { return model.Encode(s) }

// evalResult is eval's -json object.
type evalResult struct {
	Loss        float64 `json:"loss"`
	Perplexity  float64 `json:"perplexity"`
	BitsPerByte float64 `json:"bits_per_byte"`
	Tokens      int     `json:"tokens"`
	Windows     int     `json:"windows"`
}

func evalCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	modelPath := fs.String("model", "", "galleon checkpoint `file` (required)")
	dataPath := fs.String("data", "", "`file`: .txt, or .jsonl of {\"text\"} or {\"prompt\",\"completion\"} lines (required)")
	seq := fs.Int("seq", 0, "window length in tokens; 0 means the model's context length")
	batch := fs.Int("batch", 4, "windows evaluated at once")
	jsonOut := fs.Bool("json", false, "print the results as one JSON object on the last line")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	switch {
	case *modelPath == "":
		return usageError{"eval: -model is required"}
	case *dataPath == "":
		return usageError{"eval: -data is required"}
	case *seq < 0:
		return usageError{fmt.Sprintf("eval: -seq %d is negative", *seq)}
	case *batch < 1:
		return usageError{fmt.Sprintf("eval: -batch %d must be at least 1", *batch)}
	}
	if ext := strings.ToLower(filepath.Ext(*dataPath)); ext != ".txt" && ext != ".jsonl" {
		return usageError{fmt.Sprintf("eval: -data %s: want a .txt or .jsonl file", *dataPath)}
	}
	m, err := model.Load(*modelPath)
	if err != nil {
		return err
	}
	T := *seq
	if T == 0 || T > m.Config.SeqLen {
		if T > m.Config.SeqLen {
			return usageError{fmt.Sprintf("eval: -seq %d exceeds the model's context of %d", T, m.Config.SeqLen)}
		}
		T = m.Config.SeqLen
	}
	// Galleon checkpoints have no special tokens: examples are plain bytes.
	exs, err := data.ReadFile(*dataPath, data.Options{Encoder: byteEncoder{}, BOS: -1, EOS: -1})
	if err != nil {
		return err
	}
	var ws []data.Window
	if strings.ToLower(filepath.Ext(*dataPath)) == ".txt" {
		ws, err = data.Pack(exs, T, 0)
	} else {
		ws, err = data.Pad(exs, T, 0)
	}
	if err != nil {
		return err
	}
	res, err := evaluate(ctx, m, ws, T, *batch)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "loss %.4f nats/token, perplexity %.3f, %.4f bits/byte over %d tokens in %d windows\n",
		res.Loss, res.Perplexity, res.BitsPerByte, res.Tokens, res.Windows)
	if *jsonOut {
		return report.PrintJSON(stdout, res)
	}
	return nil
}

// evaluate returns the loss averaged over every target that carries loss:
// each batch's mean from model.Loss is weighted by its count of such
// targets, so padding and prompts never dilute it.
func evaluate(ctx context.Context, m *model.Model, ws []data.Window, T, batch int) (evalResult, error) {
	var sum float64
	tokens := 0
	in, tg := make([]int32, 0, batch*T), make([]int32, 0, batch*T)
	for i := 0; i < len(ws); i += batch {
		if err := ctx.Err(); err != nil {
			return evalResult{}, err
		}
		in, tg = in[:0], tg[:0]
		n := 0
		for _, w := range ws[i:min(i+batch, len(ws))] {
			in = append(in, w.Inputs...)
			tg = append(tg, w.Targets...)
			n += w.Trained()
		}
		if n == 0 {
			continue
		}
		loss, err := m.Loss(in, tg, len(in)/T, T)
		if err != nil {
			return evalResult{}, err
		}
		sum += loss * float64(n)
		tokens += n
	}
	if tokens == 0 {
		return evalResult{}, fmt.Errorf("eval: no token carries loss: %w", data.ErrData)
	}
	loss := sum / float64(tokens)
	// One token is one byte for galleon checkpoints.
	return evalResult{Loss: loss, Perplexity: math.Exp(loss), BitsPerByte: model.BitsPerByte(loss), Tokens: tokens, Windows: len(ws)}, nil
}
