// Package lora adds LoRA adapters (Hu et al., 2021) to galleon's models —
// GPT-2 and the Llama family (llama, mistral, qwen2) — by linear-module
// name, laid out as Hugging Face PEFT lays them out, so an adapter trained
// here loads with PEFT's PeftModel.from_pretrained(base, dir) and an
// adapter PEFT wrote loads here.
//
// Instead of fine-tuning a weight W (held [in, out] inside galleon for
// every family), an adapter learns two small matrices A [r, in] and
// B [out, r] and the layer computes
//
//	y = x·W + b + (alpha/r)·dropout(x)·Aᵀ·Bᵀ
//
// (alpha/√r with rsLoRA; rank_pattern and alpha_pattern give some modules
// their own r and alpha). A starts kaiming-uniform, B at zero, so a new
// adapter leaves the model unchanged. The adapted layer wraps whatever
// model.Linear the model had (float32 or quantized) and only adds the
// low-rank path, so a quantized base needs no special case in training. On
// an int8 base (quant.Linear, QLoRA-style), call the base model's
// ReleaseReplaced after quantizing to free the float32 weights the int8
// layers replaced; the int8 layers then train as frozen ops that never hold
// a float32 copy of their weights.
//
// Modules are named as Hugging Face names them, and targets match as in
// PEFT: "q_proj" selects model.layers.N.self_attn.q_proj in every block of
// a Llama-family model, "c_attn" GPT-2's transformer.h.N.attn.c_attn,
// AllLinear every linear layer but the output head; a "re:" pattern must
// match the whole name, and LayersToTransform keeps some blocks only.
//
// Apply (or Wrap and AddAdapter) installs adapters on a model.Model and
// makes the active adapter the model's trainable set: model.NewTrainer then
// allocates gradients and AdamW state for the adapter only, and the base
// weights' nodes get no derivative, so the fused linear op runs no
// weight-gradient product for them; only the input gradient the adapters
// below need is computed. Several named adapters can live on one model:
// SetActive switches, Disable gives the base behaviour, Merge folds the
// active adapter into the weights (W += scale·(B·A)ᵀ), Unmerge takes it out
// again, and MergeAndUnload returns a plain model, which
// model.Model.SavePretrained writes as a Hugging Face directory.
//
// Adapter.Save and Model.LoadAdapter read and write adapter_config.json and
// adapter_model.safetensors with PEFT's names
// (base_model.model.<module>.lora_A.weight and .lora_B.weight, for a Llama
// base base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight) and
// PEFT's config (short target_modules, fan_in_fan_out true for GPT-2's
// Conv1D layers and false for the Llama family). The loader accepts PEFT's
// variants (names with ".default", either fan_in_fan_out, regular-expression
// targets, layers_to_transform, rank and alpha patterns, F16/BF16 tensors),
// treats both files as hostile, refuses adapters that do not fit the model
// and refuses, naming them, the PEFT features galleon lacks: DoRA,
// modules_to_save, embedding adapters and trained biases.
package lora
