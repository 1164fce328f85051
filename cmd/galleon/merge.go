package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/model"
)

// mergeResult is merge's -json object.
type mergeResult struct {
	OutDir        string  `json:"out_dir"`
	Bytes         int64   `json:"bytes"`          // the output directory's files together
	MergedModules int     `json:"merged_modules"` // linear layers the adapter changed
	MaxAbsDelta   float64 `json:"max_abs_delta"`  // largest |scale·B·A| element added to a weight
	DType         string  `json:"dtype"`          // the saved weights' dtype
	CopiedFiles   int     `json:"copied_files"`   // tokenizer and generation files copied from -model
}

func mergeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("merge", flag.ContinueOnError)
	// -model and -adapter as every command names them (baseFlags), without
	// -int8: a merge writes float weights.
	var base baseFlags
	flags.StringVar(&base.Model, "model", "", "Hugging Face model `dir` to merge into (required)")
	flags.StringVar(&base.Adapter, "adapter", "", "PEFT LoRA adapter `dir` (adapter_config.json, adapter_model.safetensors) to merge (required)")
	out := flags.String("out", "", "output `dir`: a Hugging Face model directory with the adapter merged (required; replaced if it exists)")
	// float32 by default: the merged weights W + scale·B·A of a 16-bit base
	// are not 16-bit numbers, and rounding them moved a merged Qwen2's
	// logits by 7e-4 relative (TestPEFTGolden) where float32 keeps 1e-7.
	dtype := flags.String("dtype", "float32", "dtype of the saved weights: float32 (the merge exactly), auto (the base's, rounding the merge), bfloat16 or float16")
	jsonOut := flags.Bool("json", false, "print the results as one JSON object on the last line")
	if err := parse(flags, args, stderr); err != nil {
		return err
	}
	if err := base.check("merge"); err != nil {
		return err
	}
	switch {
	case base.Adapter == "":
		return usageError{"merge: -adapter is required"}
	case *out == "":
		return usageError{"merge: -out is required"}
	}
	var opts []model.SaveOption
	switch *dtype {
	case "auto":
	case "float32", "bfloat16", "float16":
		opts = append(opts, model.WithDType(*dtype))
	default:
		return usageError{fmt.Sprintf("merge: -dtype %q: want auto, float32, bfloat16 or float16", *dtype)}
	}
	if st, err := os.Stat(base.Model); err == nil && !st.IsDir() {
		return usageError{fmt.Sprintf("merge: -model %s: want a Hugging Face model directory, not a checkpoint file", base.Model)}
	}
	for _, in := range []string{base.Model, base.Adapter} {
		if same, _ := sameDir(*out, in); same {
			return usageError{fmt.Sprintf("merge: -out %s is an input directory; write the merged model elsewhere", *out)}
		}
	}

	l, err := loadBase(ctx, base)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	merged, rep, err := l.LoRA.MergeAndUnload()
	if err != nil {
		return err
	}
	// One atomic write: the weights, config.json and the base's tokenizer
	// and generation files appear together or not at all.
	if err := merged.SavePretrained(*out, append(opts, model.WithSideFiles(base.Model))...); err != nil {
		return err
	}
	res := mergeResult{OutDir: *out, MergedModules: rep.Modules, MaxAbsDelta: rep.MaxAbsDelta}
	err = filepath.WalkDir(*out, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			res.Bytes += info.Size()
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, f := range model.HFSideFiles {
		if _, err := os.Stat(filepath.Join(*out, f)); err == nil {
			res.CopiedFiles++
		}
	}
	var cfg struct {
		DType string `json:"torch_dtype"`
	}
	if raw, err := os.ReadFile(filepath.Join(*out, "config.json")); err == nil {
		_ = json.Unmarshal(raw, &cfg)
	}
	res.DType = cfg.DType
	fmt.Fprintf(stdout, "merged %s into %d layers of %s (largest weight change %.3g): %s, %s, %.1f MB\n",
		base.Adapter, res.MergedModules, base.Model, res.MaxAbsDelta, res.OutDir, res.DType, float64(res.Bytes)/1e6)
	if res.DType == "bfloat16" || res.DType == "float16" {
		fmt.Fprintf(stdout, "note: the merged weights are rounded to %s; the default -dtype float32 keeps the merge exact\n", res.DType)
	}
	if *jsonOut {
		return report.PrintJSON(stdout, res)
	}
	return nil
}

// sameDir reports whether paths a and b name the same existing directory.
func sameDir(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}
