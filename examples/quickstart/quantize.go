package main

import (
	"path/filepath"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/quant"
)

// quantResult compares the float32 model with its int8 copy.
type quantResult struct {
	Mode       string  `json:"mode"`
	FloatBytes int64   `json:"float_checkpoint_bytes"`
	Int8Bytes  int64   `json:"int8_checkpoint_bytes"`
	FloatBPB   float64 `json:"float_val_bits_per_byte"`
	Int8BPB    float64 `json:"int8_val_bits_per_byte"`
	Checkpoint string  `json:"checkpoint,omitempty"`
}

// quantize makes an int8 copy of m (per-channel int8 weights, per-token
// int8 activations with LLM.int8() outlier columns in float32, int8
// embedding tables), saves it, and evaluates both on the same validation
// windows. m is not modified.
func quantize(m *model.Model, corpus *model.Corpus, o options, out string, res *result) error {
	q := &res.Quant
	*q = quantResult{Mode: "W8A8, per-token activations, outliers |x|≥6 in float32", FloatBytes: res.Pretrain.CheckpointBytes, FloatBPB: res.Pretrain.ValBPB}
	qm, err := quant.Quantize(m, quant.Config{Act: quant.ActDynamic, Threshold: quant.DefaultThreshold, Embeddings: true})
	if err != nil {
		return err
	}
	path := filepath.Join(out, "tiny-int8.safetensors")
	if err := qm.Save(path); err != nil {
		return err
	}
	if q.Int8Bytes, err = fileSize(path); err != nil {
		return err
	}
	T := m.Config.SeqLen
	valIn, valTg, err := model.ValidationWindows(corpus.Val, o.evalWindows, T, o.seed)
	if err != nil {
		return err
	}
	if q.Int8BPB, err = qm.Evaluate(valIn, valTg, T, 16); err != nil {
		return err
	}
	if o.out != "" {
		q.Checkpoint = path
	}
	return nil
}
