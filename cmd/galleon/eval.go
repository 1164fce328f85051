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

// evalResult is eval's -json object.
type evalResult struct {
	Loss        float64 `json:"loss"`          // mean nats per scored token
	Perplexity  float64 `json:"perplexity"`    // exp(loss)
	BitsPerByte float64 `json:"bits_per_byte"` // the scored tokens' total bits over their text's UTF-8 bytes
	Tokens      int     `json:"tokens"`        // scored tokens (targets that carry loss)
	Bytes       int     `json:"bytes"`         // UTF-8 bytes of the text the scored tokens decode to
	Windows     int     `json:"windows"`
	Seq         int     `json:"seq"` // window length in tokens
	// BaseDType is how the linear weights were held: bf16 when a
	// checkpoint's BF16 weights were kept, float32 otherwise; with -int8
	// the linear weights are int8 and Int8 says so.
	BaseDType string `json:"base_dtype"`
	Int8      bool   `json:"int8"`
}

// defaultEvalSeq bounds the window of a .txt file when -seq is 0: models'
// contexts run to 32K tokens and more, far past what one evaluation
// window on a CPU needs.
const defaultEvalSeq = 1024

func evalCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	var base baseFlags
	base.register(fs)
	dataPath := fs.String("data", "", "`file`: .txt, or .jsonl of {\"text\"}, {\"prompt\",\"completion\"} or {\"messages\"} lines (required)")
	seq := fs.Int("seq", 0, "window length in tokens; 0: .txt files are packed into windows of the model's context (at most 1024), .jsonl examples padded to the longest (at most the context)")
	batch := fs.Int("batch", 4, "windows evaluated at once")
	jsonOut := fs.Bool("json", false, "print the results as one JSON object on the last line")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := base.check("eval"); err != nil {
		return err
	}
	switch {
	case *dataPath == "":
		return usageError{"eval: -data is required"}
	case *seq < 0:
		return usageError{fmt.Sprintf("eval: -seq %d is negative", *seq)}
	case *batch < 1:
		return usageError{fmt.Sprintf("eval: -batch %d must be at least 1", *batch)}
	}
	ext := strings.ToLower(filepath.Ext(*dataPath))
	if ext != ".txt" && ext != ".jsonl" {
		return usageError{fmt.Sprintf("eval: -data %s: want a .txt or .jsonl file", *dataPath)}
	}
	l, err := loadBase(ctx, base)
	if err != nil {
		return err
	}
	ctxLen := l.Model.Config.SeqLen
	if *seq > ctxLen {
		return usageError{fmt.Sprintf("eval: -seq %d exceeds the model's context of %d", *seq, ctxLen)}
	}
	exs, err := data.ReadFile(*dataPath, l.dataOptions())
	if err != nil {
		return err
	}
	T := *seq
	var ws []data.Window
	if ext == ".txt" {
		if T == 0 {
			T = min(ctxLen, defaultEvalSeq)
		}
		ws, err = data.Pack(exs, T, 0)
	} else {
		if T == 0 {
			for _, e := range exs {
				T = max(T, len(e.IDs)-1)
			}
			T = max(1, min(T, ctxLen))
		}
		ws, err = data.Pad(exs, T, 0)
	}
	if err != nil {
		return err
	}
	res, err := evaluate(ctx, l.Model, ws, T, *batch)
	if err != nil {
		return err
	}
	res.BaseDType, res.Int8 = l.DType, base.Int8
	if res.Bytes, err = scoredBytes(l.Tok, ws); err != nil {
		return err
	}
	if res.Bytes > 0 {
		res.BitsPerByte = res.Loss * float64(res.Tokens) / math.Ln2 / float64(res.Bytes)
	}
	fmt.Fprintf(stdout, "loss %.4f nats/token, perplexity %.3f, %.4f bits/byte over %d tokens (%d bytes) in %d windows of %d\n",
		res.Loss, res.Perplexity, res.BitsPerByte, res.Tokens, res.Bytes, res.Windows, T)
	if *jsonOut {
		return report.PrintJSON(stdout, res)
	}
	return nil
}

// evaluate returns the loss averaged over every target that carries loss:
// the batches' summed losses (model.Inference.LossSum) over their count of
// such targets, so padding and prompts never dilute it.
func evaluate(ctx context.Context, m *model.Model, ws []data.Window, T, batch int) (evalResult, error) {
	var sum float64
	tokens := 0
	in, tg := make([]int32, 0, batch*T), make([]int32, 0, batch*T)
	// One inference session per batch size (the last batch may be
	// short), reused: a session per batch would leave its key/value cache
	// and buffers, 0.1 GB at SmolLM2-135M's shapes and 4×256 tokens,
	// as garbage each time, piling up between collections on top of a
	// training run's memory.
	sessions := map[int]*model.Inference{}
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
		b := len(in) / T
		inf := sessions[b]
		if inf == nil {
			var err error
			if inf, err = m.NewInference(b, T); err != nil {
				return evalResult{}, err
			}
			sessions[b] = inf
		}
		inf.Reset()
		s, count, err := inf.LossSum(in, tg, T)
		if err != nil {
			return evalResult{}, err
		}
		sum += s
		tokens += count
	}
	if tokens == 0 {
		return evalResult{}, fmt.Errorf("eval: no token carries loss: %w", data.ErrData)
	}
	loss := sum / float64(tokens)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return evalResult{}, fmt.Errorf("eval: loss is %v: %w", loss, model.ErrNonFinite)
	}
	return evalResult{Loss: loss, Perplexity: math.Exp(loss), Tokens: tokens, Windows: len(ws), Seq: T}, nil
}

// scoredBytes returns the UTF-8 bytes of the text the scored tokens of ws
// stand for: for each run of scored tokens, what the run adds to the
// decoded text of its window up to it (special tokens, such as EOS, add
// none). Decoding the window's prefix rather than the run alone keeps
// decoders that act on a sequence's first token (SentencePiece's leading
// space) from changing the count, so a text's bytes are counted once, as
// it was written, whatever the tokenization.
func scoredBytes(tok textTokenizer, ws []data.Window) (int, error) {
	total := 0
	var seq []int32
	for _, w := range ws {
		// The window's tokens: its first input, then each position's
		// next token (the target, or the next input where the target is
		// masked).
		seq = append(seq[:0], w.Inputs[0])
		var scored []bool
		scored = append(scored, false)
		for i, t := range w.Targets {
			switch {
			case t != data.IgnoreIndex:
				seq, scored = append(seq, t), append(scored, true)
			case i+1 < len(w.Inputs):
				seq, scored = append(seq, w.Inputs[i+1]), append(scored, false)
			}
		}
		for a := 0; a < len(seq); {
			if !scored[a] {
				a++
				continue
			}
			b := a
			for b < len(seq) && scored[b] {
				b++
			}
			before, err := tok.DecodeSkipSpecial(seq[:a])
			if err != nil {
				return 0, fmt.Errorf("eval: %w", err)
			}
			after, err := tok.DecodeSkipSpecial(seq[:b])
			if err != nil {
				return 0, fmt.Errorf("eval: %w", err)
			}
			total += max(0, len(after)-len(before))
			a = b
		}
	}
	return total, nil
}
