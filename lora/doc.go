// Package lora adds LoRA adapters (Hu et al., 2021) to galleon's GPT, laid
// out as Hugging Face PEFT lays them out, so an adapter trained here loads
// in the Python ecosystem and the other way round.
//
// Instead of fine-tuning a weight W ([in, out], the Conv1D layout of GPT-2),
// an adapter learns two small matrices A [r, in] and B [out, r] and the
// layer computes
//
//	y = x·W + b + (alpha/r)·dropout(x)·Aᵀ·Bᵀ
//
// (alpha/√r with rsLoRA). A starts kaiming-uniform, B at zero, so a new
// adapter leaves the model unchanged. The adapted layer wraps whatever
// model.Linear the model had (float32 or quantized) and only adds the
// low-rank path, so a quantized base needs no special case in training. On
// an int8 base (quant.Linear, QLoRA-style), call the base model's
// ReleaseReplaced after quantizing to free the float32 weights the int8
// layers replaced; the int8 layers then train as frozen ops that never hold
// a float32 copy of their weights.
//
// Apply (or Wrap and AddAdapter) installs adapters on a model.Model and
// makes the active adapter the model's trainable set: model.NewTrainer then
// allocates gradients and AdamW state for the adapter only, and the base
// weights' nodes get no derivative, so the fused linear op runs no
// weight-gradient product for them; only the input gradient the adapters
// below need is computed. Several named adapters can live on one model:
// SetActive switches, Disable gives the base behaviour, Merge folds the
// active adapter into the weights (W += scale·(B·A)ᵀ), Unmerge takes it out
// again, and MergeAndUnload returns a plain model.
//
// Adapter.Save and Model.LoadAdapter read and write adapter_config.json and
// adapter_model.safetensors with PEFT's names
// (base_model.model.<module>.lora_A.weight and .lora_B.weight); the loader
// treats both files as hostile and refuses adapters that do not fit the
// model.
package lora
