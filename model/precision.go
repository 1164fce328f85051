package model

import "fmt"

// Precision is the number format of the matrix products of a training
// graph (TrainConfig.Precision, ReplicaOptions.Precision).
//
// With PrecisionBF16 the products of the model's linear layers
// (DenseLinear: attention projections and MLPs, forward, input gradient and
// weight gradient) take bfloat16 operands and accumulate in float32
// (kernels.GemmBF16, VDPBF16PS where the CPU has AVX512_BF16): the
// float32 master weights, the activations and the output gradients are
// rounded to bf16 as the products pack them (each product packs its
// operands once; no bf16 copy of a weight is kept). Everything else
// stays float32: the master weights, gradients and AdamW's moments (so that
// small updates are not lost to bf16's 8-bit mantissa), the sums inside
// every product, softmax and attention, the norms, the embedding, the
// output head with its cross-entropy (vocabulary-wide logits are where
// bf16 rounding would cost the most in the loss), and the loss. Checkpoints
// hold the float32 state only, so a run resumes exactly in either
// precision.
type Precision uint8

// The precisions.
const (
	PrecisionFP32 Precision = iota // float32 operands (the default)
	PrecisionBF16                  // bfloat16 operands, float32 accumulation
)

// String returns "fp32" or "bf16", the spelling ParsePrecision accepts.
func (p Precision) String() string {
	switch p {
	case PrecisionFP32:
		return "fp32"
	case PrecisionBF16:
		return "bf16"
	}
	return fmt.Sprintf("Precision(%d)", uint8(p))
}

// ParsePrecision returns the precision named s: fp32 (or float32) or bf16
// (or bfloat16).
func ParsePrecision(s string) (Precision, error) {
	switch s {
	case "fp32", "float32":
		return PrecisionFP32, nil
	case "bf16", "bfloat16":
		return PrecisionBF16, nil
	}
	return 0, fmt.Errorf("model: unknown precision %q (want fp32 or bf16)", s)
}

// Precision returns the precision of the graph's matrix products.
func (gc *GraphContext) Precision() Precision { return gc.precision }
