// Package quant is galleon's int8 quantization: int8 tensors (per-channel,
// per-token, per-tensor and Q8_0-style blocks), observers for calibrating
// static activation scales, an int8 Linear layer that runs on the int8 GEMM of
// internal/kernels (with LLM.int8() outlier decomposition), post-training
// quantization of a model.Model and its int8 checkpoints, and fake-quant
// gorgonia ops for quantization-aware training.
//
// # Quantization scheme
//
// Everything is symmetric int8 with the range [−127, 127] (−128 is never
// produced, which keeps the AVX2 kernel exact): for a scale s,
//
//	q = clamp(round(x/s), −127, 127),  x̂ = q·s,
//
// with round half away from zero (the int8 GEMM's activation quantization,
// branchless and in assembly, rounds ties to even instead). For |x| ≤ 127·s
// the error is |x − x̂| ≤ s/2 (half a step); beyond, values saturate at ±127·s. Scales from data are
// s = max|x|/127 over the group the scale covers (a row, a tensor or a block),
// so that group never saturates. An all-zero group gets s = 1.
//
// # Layout
//
// The model stores linear weights [in, out] (GPT-2 Conv1D). An int8 Linear
// keeps its weight transposed, [out, in] row-major, one scale per output
// channel (row): the layout of torch.nn.Linear and of the GEMM's B operand.
// Activations [rows, in] get one scale per row (per token, dynamic) or one
// per tensor (static, from calibration).
//
// # Models
//
// Quantize turns a trained model into an int8 inference model by replacing
// its linear layers (model.Model.SetLinear) with *Linear; the model's
// Evaluate, Logits and Generate then run on int8 GEMMs. Save and Load write and
// read int8 checkpoints (I8 weights, F32 scales, configuration). The model
// still carries float32 copies of the replaced weights until
// model.Model.ReleaseReplaced frees them (Save works either way).
//
// In a training graph a *Linear is one frozen op (Int8Linear) that
// dequantizes its weight a panel at a time inside the product and gives
// only the input gradient, so adapters (package lora) train on an int8 base
// that holds one byte per weight. For
// quantization-aware training, InsertFakeQuant swaps the linears for QATLinear
// layers whose training graph quantizes and dequantizes weights and
// activations with a straight-through gradient (optionally LSQ-learned
// scales); Convert then produces the int8 model.
package quant
