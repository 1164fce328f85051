// Package parallel trains a galleon model with data parallelism.
//
// A Trainer splits each global micro-batch across ranks by rows (samples),
// runs forward and backward on every rank, reduces the gradients with a
// Communicator in fixed-order buckets, clips them by their global norm, and
// lets every rank apply AdamW to its own contiguous shard of the flat
// parameter vector (sharded optimizer state).
//
// Two deployments share that step:
//
//   - New runs N goroutine workers in one process. Every worker owns a
//     model.Replica (its own gorgonia graph and gradient buffer) bound to the
//     model's single weight buffer, so there are no weight copies: worker i
//     reduces shard i of every worker's gradients in rank order and updates
//     shard i of the shared weights in place.
//   - NewRank runs one rank of a group whose members each hold their own
//     model copy, as processes do under MPI (build tag mpi, NewMPI) or
//     goroutines with NewGroup. ZeRO stages 0–3 select what each rank keeps:
//     stage 0 all-reduces gradients and every rank steps the whole model
//     (DDP); stage 1 reduce-scatters gradients, steps its optimizer shard and
//     all-gathers the parameters; stage 2 communicates as stage 1 and keeps
//     only the gradient shard between steps (on Linux the gradient buffer is
//     mapped memory whose other pages go back to the system after the
//     reduce-scatter); stage 3 also keeps only the parameter shard between
//     steps: the embeddings and layer norms are all-gathered for the step,
//     and each linear layer's weights are all-gathered when the forward
//     pass reaches the layer and again in the backward pass, and given back
//     after each (the trainer swaps the model's dense linear layers for
//     ones that do this, and puts them back on Close).
//     Trainer.Memory reports both what a rank holds and what a step adds.
//
// Reductions are deterministic: every element of a sum is added in rank order
// whatever the timing of goroutines or processes, so a run is bit-for-bit
// repeatable, all ranks hold bit-identical weights, and the in-process and MPI
// deployments agree bit for bit. Gradients travel in buckets of
// Config.BucketBytes (25 MiB by default) in a fixed order, once per optimizer
// step whatever the accumulation. The global gradient norm is a float64 sum
// of squares per block of 1024 elements, the blocks added in order, so it
// does not depend on the number of ranks either; shard boundaries fall on
// those blocks.
//
// Different worker counts split a micro-batch differently, so by default
// their gradients agree to float32 rounding (the sums group the samples
// differently), and Adam, whose update is about lr·sign(g) for any |g| ≫ ε,
// turns a sign flip of a gradient at the rounding level into a 2·lr
// difference of that parameter. Config.Exact removes the difference: each
// sample's gradient is computed alone and the per-sample gradients are added
// in global sample order, so 1, 2 or 3 workers produce the same bits, at the
// price of one gradient buffer per sample and one graph run per sample.
//
// Config.CommPrecision model.PrecisionBF16 sends the gradients as bfloat16, half the
// bytes on the wire, and keeps the reduction float32: each rank widens the
// bf16 contributions it receives and adds them in rank order, then rounds
// the sum once to bf16, so every stage, deployment and rank still agrees
// bit for bit (see Config.CommPrecision). Communicators count the bytes they send
// (WireCounter, Trainer.BytesSent).
package parallel
