package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/quant"
)

// quantizeResult is quantize's -json object. Sizes are bytes on disk: the
// weights files (the *.safetensors of each directory) and whole
// directories (their regular files).
type quantizeResult struct {
	ModelDir      string  `json:"model_dir"`
	OutDir        string  `json:"out_dir"`
	Int8Layers    int     `json:"int8_layers"`
	OriginalBytes int64   `json:"original_bytes"` // the source's *.safetensors
	Int8Bytes     int64   `json:"int8_bytes"`     // the int8 weights file
	Ratio         float64 `json:"ratio"`          // int8_bytes / original_bytes
	OriginalDir   int64   `json:"original_dir_bytes"`
	Int8Dir       int64   `json:"int8_dir_bytes"`
}

// quantizeCmd writes an int8 model directory (quant.SavePretrained's format)
// from a Hugging Face directory, streaming it tensor by tensor so that its
// memory follows the int8 model, and prints its size next to the
// original's. generate, chat, eval and finetune read the result with -int8.
func quantizeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quantize", flag.ContinueOnError)
	modelDir := fs.String("model", "", "Hugging Face model `dir` (config.json, *.safetensors in F32, F16 or BF16) (required)")
	outDir := fs.String("out", "", "`dir` to write the int8 model to: config.json, tokenizer files, "+quant.Int8WeightsFile+" (required)")
	jsonOut := fs.Bool("json", false, "print the sizes as one JSON object on the last line")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	switch {
	case *modelDir == "":
		return usageError{"quantize: -model is required"}
	case *outDir == "":
		return usageError{"quantize: -out is required"}
	}
	if fi, err := os.Stat(*modelDir); err != nil {
		return fmt.Errorf("quantize: %w", err)
	} else if !fi.IsDir() {
		return usageError{fmt.Sprintf("quantize: -model %s is not a directory (a Hugging Face model directory)", *modelDir)}
	}
	if same(*modelDir, *outDir) {
		return usageError{"quantize: -out must differ from -model"}
	}
	// The directory is replaced as a whole: refuse to replace anything but
	// an earlier int8 model.
	if ents, err := os.ReadDir(*outDir); err == nil && len(ents) > 0 && !quant.IsInt8Dir(*outDir) {
		return usageError{fmt.Sprintf("quantize: -out %s exists and is not an int8 model directory; choose a new directory", *outDir)}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		if fi, serr := os.Stat(*outDir); serr == nil && !fi.IsDir() {
			return usageError{fmt.Sprintf("quantize: -out %s is a file; give a directory", *outDir)}
		}
		return fmt.Errorf("quantize: %w", err)
	}
	q, err := quant.LoadPretrained(*modelDir, int8Config())
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := q.SavePretrained(*outDir, *modelDir); err != nil {
		return err
	}
	res := quantizeResult{ModelDir: *modelDir, OutDir: *outDir, Int8Layers: len(q.Linears)}
	res.OriginalBytes, res.OriginalDir = dirBytes(*modelDir)
	res.Int8Bytes, res.Int8Dir = dirBytes(*outDir)
	if res.OriginalBytes > 0 {
		res.Ratio = float64(res.Int8Bytes) / float64(res.OriginalBytes)
	}
	fmt.Fprintf(stdout, "wrote %s: %d int8 layers; weights %s int8 vs %s original (%.2f×); directory %s vs %s\n",
		*outDir, res.Int8Layers, humanBytes(res.Int8Bytes), humanBytes(res.OriginalBytes), res.Ratio,
		humanBytes(res.Int8Dir), humanBytes(res.OriginalDir))
	if *jsonOut {
		return report.PrintJSON(stdout, res)
	}
	return nil
}

// same reports whether a and b name the same directory.
func same(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	if err1 == nil && err2 == nil {
		return os.SameFile(fa, fb)
	}
	aa, _ := filepath.Abs(a)
	ab, _ := filepath.Abs(b)
	return aa == ab
}

// dirBytes returns the bytes of dir's *.safetensors files and of all its
// regular files (not descending into subdirectories).
func dirBytes(dir string) (weights, total int64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		total += fi.Size()
		if strings.HasSuffix(e.Name(), ".safetensors") {
			weights += fi.Size()
		}
	}
	return weights, total
}

// humanBytes formats n bytes with a decimal unit (MB, GB), as file
// managers and Hugging Face's model pages show sizes.
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
