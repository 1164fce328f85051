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
// # Hugging Face directories
//
// LoadPretrained reads a Hugging Face model directory as an int8 model
// without ever holding its float32 linear weights: model.LoadPretrained
// streams the safetensors shards one tensor at a time and hands each linear
// weight (F32, F16 or BF16) to a loader that quantizes it per output
// channel as it is read, so memory follows the int8 weights, the float32
// embeddings and norms and one tensor's file bytes (1.40 GiB peak for
// TinyLlama-1.1B's shapes from a 2.2 GB BF16 checkpoint,
// TestInt8LoRAPeakRSS). An untied output head is int8 too with Config.Head;
// a tied one stays the float32 token embedding. SavePretrained writes an
// int8 model directory (Int8WeightsFile beside the source's config.json and
// tokenizer files), which LoadPretrained reads back bit for bit and treats
// as hostile input like every checkpoint (FuzzLoadPretrained).
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
