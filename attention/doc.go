// Package attention implements scaled dot-product attention for galleon:
// FlashAttention forward and backward kernels whose memory grows linearly
// with the sequence length, a decoding kernel for generation against a KV
// cache, a naive reference that materializes the score matrix, and gorgonia
// ops wrapping both implementations for the training graph.
//
// # Tensors
//
// Every kernel works on float32 views of [B, H, T, D] data (see [Tensor]):
// batch, head, position and feature, with the feature axis contiguous and the
// other three strided. [Contiguous] describes the usual contiguous layout;
// [PackedQKV] and [PackedHeads] describe the model's fused QKV projection
// output [B·T, (H+2·KVH)·D] and the attention output [B·T, H·D], so the model
// needs no transposes.
//
// Query heads may outnumber key/value heads (grouped-query and multi-query
// attention): query head h reads key/value head h/(H/KVH).
//
// # Masks
//
// [Options] selects causal masking, a sliding window and per-sequence valid
// lengths for padded batches. A query row with no visible key (for example a
// padding row) produces a zero output, a log-sum-exp of −Inf and zero
// gradients; no NaN is ever produced from finite inputs.
//
// # Algorithm
//
// [Forward] tiles queries into blocks of Options.BlockQ rows and keys into
// blocks of Options.BlockK columns, keeps a running maximum and sum per row
// (online softmax) and saves one log-sum-exp per row. [Backward] recomputes
// the probabilities from that log-sum-exp, block by block, so neither pass
// allocates anything of size T×T. Tiles lying entirely outside the mask are
// skipped, which halves the work of causal attention, and inside the tiles
// on the mask's edges the products skip every block of 6 query rows × 16
// keys that none of its rows sees. Tile products run in register-blocked
// AVX2/FMA and AVX-512 kernels on amd64 (pure Go elsewhere, or with the
// purego build tag); row-wise softmax work uses internal/kernels.
//
// Work is split into independent items — (batch, head, query block) in the
// forward pass, (batch, key/value head) in the backward pass, whose key
// blocks are split into ranges when there are fewer than four such pairs —
// taken from a shared queue by a fixed number of goroutines. Every output element is
// written by exactly one item and every sum has a fixed order, so repeated
// runs give bit-identical results.
package attention
