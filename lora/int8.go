package lora

import (
	"fmt"
	"math"

	"github.com/galleon-ml/galleon/quant"
)

// mergeInt8 folds delta ([in, out]) into an int8 layer: it dequantizes the
// weight, adds delta, and quantizes the sum again per output channel with
// the layer's options. It returns the new layer and the largest absolute
// difference between the requantized weight and the exact float sum — the
// error the int8 storage adds to the merge (at most half a quantization
// step of each channel's new scale).
func mergeInt8(l *quant.Linear, delta []float32) (*quant.Linear, float64, error) {
	w := l.Dequantize()
	if len(w) != len(delta) {
		return nil, 0, fmt.Errorf("lora: merge into int8 layer %d→%d: delta of %d values", l.In, l.Out, len(delta))
	}
	for i, d := range delta {
		w[i] += d
	}
	// A NaN or Inf update (non-finite A or B, or a product that overflows)
	// is refused by quant.NewLinear, which checks every weight it
	// quantizes (TestInt8MergeNonFinite).
	nl, err := quant.NewLinear(w, l.Bias, l.In, l.Out, quant.LinearOptions{Act: l.Act, ActScale: l.ActScale, Threshold: l.Threshold})
	if err != nil {
		return nil, 0, fmt.Errorf("lora: requantize merged weight: %w", err)
	}
	var maxErr float64
	for i, v := range nl.Dequantize() {
		maxErr = max(maxErr, math.Abs(float64(v)-float64(w[i])))
	}
	return nl, maxErr, nil
}
