package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
)

// heldOut is the package left out of pretraining and used for fine-tuning.
const heldOut = model.HeldOutDomain

// loraResult is the adapter fine-tuned on the held-out package.
type loraResult struct {
	Domain          string  `json:"domain"`
	Rank            int     `json:"r"`
	Alpha           float64 `json:"alpha"`
	Steps           int     `json:"steps"`
	FullParams      int     `json:"full_params"`
	AdapterParams   int     `json:"adapter_params"`
	BaseBPB         float64 `json:"base_bits_per_byte"`
	AdaptedBPB      float64 `json:"adapted_bits_per_byte"`
	AdapterBytes    int64   `json:"adapter_bytes"`
	CheckpointBytes int64   `json:"checkpoint_bytes"`
	Adapter         string  `json:"adapter_dir,omitempty"`
}

// fineTune adapts m to the held-out package with a rank-8 LoRA adapter on
// every linear layer (the base frozen), evaluates the held-out validation
// windows before and after, and saves the adapter in PEFT's format.
func fineTune(ctx context.Context, m *model.Model, o options, out string, res *result, stderr io.Writer) error {
	corpus, err := model.LoadCorpus(ctx, model.CorpusOptions{Root: o.corpusRoot, Include: []string{heldOut}, Exclude: []string{}})
	if err != nil {
		return err
	}
	T := m.Config.SeqLen
	valIn, valTg, err := model.ValidationWindows(corpus.Val, o.evalWindows, T, o.seed)
	if err != nil {
		return err
	}
	r := &res.LoRA
	*r = loraResult{Domain: heldOut, Rank: 8, Alpha: 32, Steps: o.loraSteps, FullParams: m.NumParams(), CheckpointBytes: res.Pretrain.CheckpointBytes}
	if r.BaseBPB, err = m.Evaluate(valIn, valTg, T, 16); err != nil {
		return err
	}
	lm, err := lora.Apply(m, lora.Config{R: r.Rank, Alpha: r.Alpha, Dropout: 0.1, TargetModules: []string{lora.AllLinear}, Seed: o.seed, BaseModel: "galleon tiny, pretrained by examples/quickstart"})
	if err != nil {
		return err
	}
	r.AdapterParams = lm.Active().NumParams()
	adamw := model.DefaultAdamW()
	adamw.WeightDecay = 0 // as PEFT with Hugging Face's Trainer
	tr, err := model.NewTrainer(m, model.TrainConfig{Batch: 8,
		Schedule: model.Schedule{Peak: 6e-3, Warmup: min(20, o.loraSteps/10), Total: o.loraSteps, MinRatio: 0.1},
		AdamW:    adamw, ClipNorm: 1})
	if err != nil {
		return err
	}
	defer tr.Close()
	data, err := model.NewSampler(corpus.Train, T, o.seed)
	if err != nil {
		return err
	}
	bar := report.NewProgress(stderr, "LoRA "+heldOut)
	ema := report.EMA{Decay: 0.95}
	err = tr.Train(ctx, data, o.loraSteps, func(st model.StepStats) {
		loss := ema.Add(st.Loss)
		bar.Update(float64(st.Step)/float64(o.loraSteps), fmt.Sprintf("loss %.3f bpb", model.BitsPerByte(loss)))
	})
	if err != nil {
		bar.Finish("stopped")
		return err
	}
	bar.Finish(fmt.Sprintf("%d steps", o.loraSteps))
	if r.AdaptedBPB, err = m.Evaluate(valIn, valTg, T, 16); err != nil {
		return err
	}
	dir := filepath.Join(out, "adapter")
	if err := lm.Active().Save(dir); err != nil {
		return err
	}
	for _, f := range []string{lora.WeightsFile, lora.ConfigFile} {
		n, err := fileSize(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		r.AdapterBytes += n
	}
	if o.out != "" {
		r.Adapter = dir
	}
	return nil
}
