// Command randomhf writes a Hugging Face model directory with random
// weights at a real model's shapes, for measuring `galleon finetune`,
// generate and quantize where no checkpoint can be downloaded: the files
// are what from_pretrained reads (config.json, model.safetensors in the
// chosen dtype) and the loading, training and saving code paths are the
// ones a real checkpoint takes. A tokenizer directory (tokenizer.json,
// tokenizer_config.json) is copied in; its vocabulary must fit the
// preset's.
//
//	go run ./examples/randomhf -preset smollm2-135m -tokenizer ~/.cache/galleon/tokenizer-data/llama2 -out smollm2-random
//	go run ./examples/randomhf -preset tinyllama-1.1b -tokenizer ~/.cache/galleon/tokenizer-data/llama2 -dtype bf16 -out tinyllama-random
//
// Presets: smollm2-135m (576 wide, 30 layers, 9/3 heads, MLP 1,536, vocab
// 49,152, tied), tinyllama-1.1b (2,048 wide, 22 layers, 32/4 heads, MLP
// 5,632, vocab 32,000, untied), gpt2-124m, and tiny-llama (64 wide, 2
// layers, vocab 32,000: the galleon command's test fixture).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

// presets maps a preset name to its architecture.
var presets = map[string]func() model.Config{
	"smollm2-135m":   model.SmolLM2_135M,
	"gpt2-124m":      model.GPT2_124M,
	"tinyllama-1.1b": tinyLlama11B,
	"tiny-llama":     tinyLlama,
}

// tinyLlama11B is TinyLlama-1.1B's architecture (TinyLlama/TinyLlama-1.1B-
// Chat-v1.0's config.json): 2,048 wide, 22 layers, 32 query and 4
// key/value heads, MLP 5,632, vocab 32,000, untied head, rope_theta 10,000,
// 2,048 positions.
func tinyLlama11B() model.Config {
	return model.Config{Family: model.FamilyLlama, ModelType: "llama", Vocab: 32000, DModel: 2048, Layers: 22, Heads: 32, KVHeads: 4,
		SeqLen: 2048, Intermediate: 5632, LayerNormEps: 1e-5, RopeTheta: 10000, Attention: model.AttentionFlash}
}

// tinyLlama is a small Llama at the Llama 2 tokenizer's vocabulary.
func tinyLlama() model.Config {
	return model.Config{Family: model.FamilyLlama, ModelType: "llama", Vocab: 32000, DModel: 64, Layers: 2, Heads: 4, KVHeads: 2,
		SeqLen: 256, Intermediate: 96, LayerNormEps: 1e-5, RopeTheta: 1e4, Attention: model.AttentionFlash}
}

// dtypes maps -dtype values to SavePretrained's names.
var dtypes = map[string]string{"f32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16", "f16": "float16", "float16": "float16"}

type result struct {
	Dir         string `json:"dir"`
	Preset      string `json:"preset"`
	Params      int    `json:"params"`
	DType       string `json:"dtype"`
	WeightBytes int64  `json:"weight_bytes"`
}

func main() {
	preset := flag.String("preset", "smollm2-135m", "architecture: "+strings.Join(names(), ", "))
	tok := flag.String("tokenizer", "", "`dir` holding tokenizer.json (and tokenizer_config.json) to copy in (required)")
	dtype := flag.String("dtype", "bf16", "weight dtype: bf16, f16 or f32")
	out := flag.String("out", "", "output `dir` (required)")
	seed := flag.Uint64("seed", 1, "seed of the random weights")
	jsonOut := flag.Bool("json", false, "print the result as one JSON object on the last line")
	flag.Parse()
	mk, ok := presets[*preset]
	dt, dok := dtypes[*dtype]
	var bad string
	switch {
	case !ok:
		bad = fmt.Sprintf("unknown -preset %q (have %s)", *preset, strings.Join(names(), ", "))
	case !dok:
		bad = fmt.Sprintf("unknown -dtype %q (want bf16, f16 or f32)", *dtype)
	case *tok == "":
		bad = "-tokenizer is required"
	case *out == "":
		bad = "-out is required"
	case flag.NArg() > 0:
		bad = fmt.Sprintf("unexpected argument %q", flag.Arg(0))
	}
	if bad != "" {
		fmt.Fprintf(os.Stderr, "randomhf: %s\n", bad)
		os.Exit(2)
	}
	report.Main("randomhf", *jsonOut, func(ctx context.Context, stdout, _ io.Writer) (result, error) {
		return write(ctx, mk(), *preset, *tok, dt, *out, *seed, stdout)
	})
}

func names() []string {
	var ns []string
	for n := range presets {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// write draws the model, saves it and copies the tokenizer files.
func write(ctx context.Context, cfg model.Config, preset, tokDir, dtype, out string, seed uint64, stdout io.Writer) (result, error) {
	tk, err := tokenizer.Load(tokDir)
	if err != nil {
		return result{}, err
	}
	// The largest id the tokenizer produces must have an embedding row.
	top := int32(-1)
	for _, id := range []int32{tk.BOS(), tk.EOS(), tk.UNK(), tk.PAD()} {
		top = max(top, id)
	}
	if _, ok := tk.IDToToken(int32(cfg.Vocab)); ok {
		return result{}, fmt.Errorf("tokenizer %s has token id %d, beyond %s's vocabulary of %d", tokDir, cfg.Vocab, preset, cfg.Vocab)
	}
	if int(top) >= cfg.Vocab {
		return result{}, fmt.Errorf("tokenizer %s has special id %d, beyond %s's vocabulary of %d", tokDir, top, preset, cfg.Vocab)
	}
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	m, err := model.New(cfg, seed)
	if err != nil {
		return result{}, err
	}
	if err := m.SavePretrained(out, model.WithDType(dtype)); err != nil {
		return result{}, err
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tokDir, name))
		if errors.Is(err, os.ErrNotExist) && name != "tokenizer.json" {
			continue
		}
		if err != nil {
			return result{}, err
		}
		if err := report.WriteFileAtomic(filepath.Join(out, name), b); err != nil {
			return result{}, err
		}
	}
	res := result{Dir: out, Preset: preset, Params: m.NumParams(), DType: dtype}
	files, _ := filepath.Glob(filepath.Join(out, "*.safetensors"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			res.WeightBytes += st.Size()
		}
	}
	fmt.Fprintf(stdout, "wrote %s: %s with random weights, %d parameters, %s, %.1f MB of weights\n", out, preset, res.Params, dtype, float64(res.WeightBytes)/1e6)
	return res, nil
}
