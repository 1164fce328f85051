// Command quickstart is galleon's tour in one run, about three minutes on a
// 2-core machine:
//
//  1. FlashAttention against materialized attention on one long sequence
//     (time and scratch memory of a forward and backward pass);
//  2. pretraining the tiny GPT preset on the Go standard library's source
//     (without net/http) with flash attention and two data-parallel workers,
//     after timing one worker on the same steps' shape;
//  3. validation bits/byte and a generated sample;
//  4. int8 post-training quantization: checkpoint size and bits/byte before
//     and after;
//  5. a LoRA adapter fine-tuned on net/http, the package held out of
//     pretraining: held-out bits/byte before and after, adapter size against
//     the checkpoint's.
//
// It ends with a before/after table of the four techniques. Files (the float
// and int8 checkpoints, the adapter, a loss-curve PNG) go to -out, or to a
// temporary directory that is removed at the end.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -short -json   # seconds; what CI runs
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/galleon-ml/galleon/internal/report"
)

type options struct {
	pretrainSteps int
	loraSteps     int
	workers       int
	attnT         int
	evalWindows   int
	sampleLen     int
	out           string
	seed          uint64
	corpusRoot    string
	short         bool
	jsonOut       bool
}

func main() {
	var o options
	flag.IntVar(&o.pretrainSteps, "pretrain-steps", 8000, "pretraining steps (8 sequences of 64 bytes each)")
	flag.IntVar(&o.loraSteps, "lora-steps", 800, "LoRA fine-tuning steps on net/http")
	flag.IntVar(&o.workers, "workers", 2, "data-parallel workers for pretraining")
	flag.IntVar(&o.attnT, "attention-T", 2048, "sequence length of the attention comparison")
	flag.IntVar(&o.evalWindows, "eval-windows", 256, "validation windows per evaluation")
	flag.IntVar(&o.sampleLen, "sample", 200, "bytes of Go to generate")
	flag.StringVar(&o.out, "out", "", "directory for checkpoints, adapter and plot (default: a temporary one, removed at the end)")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of initialization, data order, dropout and sampling")
	flag.StringVar(&o.corpusRoot, "corpus", "", "source root to train on (default: $(go env GOROOT)/src)")
	flag.BoolVar(&o.short, "short", false, "a few steps of everything (the same code path, in seconds)")
	flag.BoolVar(&o.jsonOut, "json", false, "print the results as one JSON object on the last line")
	flag.Parse()
	if o.short {
		o.pretrainSteps, o.loraSteps = min(o.pretrainSteps, 30), min(o.loraSteps, 10)
		o.attnT, o.evalWindows, o.sampleLen = min(o.attnT, 256), min(o.evalWindows, 16), min(o.sampleLen, 40)
	}

	report.Main("quickstart", o.jsonOut, func(ctx context.Context, stdout, stderr io.Writer) (*result, error) {
		return run(ctx, o, stdout, stderr)
	})
}

// run is the whole tour; stdout gets the results, stderr the progress.
func run(ctx context.Context, o options, stdout, stderr io.Writer) (*result, error) {
	if o.pretrainSteps < 2 || o.loraSteps < 1 || o.workers < 1 || o.attnT < 1 || o.evalWindows < 1 {
		return nil, fmt.Errorf("need -pretrain-steps ≥ 2, -lora-steps, -workers, -attention-T and -eval-windows ≥ 1")
	}
	out := o.out
	if out == "" {
		dir, err := os.MkdirTemp("", "galleon-quickstart-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		out = dir
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	say := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	res := &result{Out: o.out}

	say("1/4 attention: flash vs materialized, one sequence of %d tokens", o.attnT)
	if err := compareAttention(&res.Attention, o.attnT); err != nil {
		return nil, err
	}
	say("    forward+backward %.1f ms → %.1f ms, scratch %s → %s",
		res.Attention.NaiveMS, res.Attention.FlashMS, size(int64(res.Attention.NaiveBytes)), size(int64(res.Attention.FlashBytes)))

	say("2/4 pretraining the tiny preset with %d data-parallel workers", o.workers)
	m, corpus, err := pretrain(ctx, o, out, res, stderr)
	if err != nil {
		return nil, err
	}
	say("    validation %.3f bits/byte after %d steps; sample:\n%s", res.Pretrain.ValBPB, res.Pretrain.Steps, indent(res.Pretrain.Sample))

	say("3/4 int8 post-training quantization")
	if err := quantize(m, corpus, o, out, res); err != nil {
		return nil, err
	}
	say("    checkpoint %s → %s, validation %.3f → %.3f bits/byte",
		size(res.Quant.FloatBytes), size(res.Quant.Int8Bytes), res.Quant.FloatBPB, res.Quant.Int8BPB)

	say("4/4 LoRA on %s, held out of pretraining", heldOut)
	if err := fineTune(ctx, m, o, out, res, stderr); err != nil {
		return nil, err
	}
	say("    held-out %.3f → %.3f bits/byte; adapter %s vs checkpoint %s",
		res.LoRA.BaseBPB, res.LoRA.AdaptedBPB, size(res.LoRA.AdapterBytes), size(res.Quant.FloatBytes))

	res.Table = table(res)
	printTable(stdout, res.Table)
	if o.out != "" {
		fmt.Fprintf(stdout, "files in %s\n", o.out)
	}
	return res, nil
}
