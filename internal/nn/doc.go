// Package nn holds galleon's fused neural-network operations, in two forms
// that compute the same arithmetic:
//
//   - raw kernels on row-major float32 slices (EmbeddingForward,
//     LayerNormForward, GELUForward, LinearForward, CrossEntropyForward, and
//     for the Llama family RMSNormForward, SwiGLUForward and RopeForward,
//     with their Backward counterparts, and the fused, chunked output head
//     and loss LinearCrossEntropyForward/Backward), which allocate nothing
//     and are what the inference path (generation with a KV cache, the int8
//     model, LoRA merge) calls directly;
//   - gorgonia custom ops (Embedding, LayerNorm, GELU, Linear, BiasAdd,
//     CrossEntropy, RMSNorm, SwiGLU, RoPE, LinearCrossEntropy, and LinearCat
//     and SwiGLUPacked for the Llama family's projections of one input side
//     by side) for the training graph, each one node forward and one node
//     per input gradient backward.
//
// Fused ops exist because gorgonia's composed element-wise ops are slow
// (broadcasts copy, every step allocates) and some of them differentiate
// wrongly (the fused ops' finite-difference gradient tests check what the
// composed ones got wrong); BenchmarkComposedVsFused shows the difference.
//
// # Conventions
//
// Activations are 2-D [rows, features] with rows = B·T; linear weights are
// stored [in, out] (Hugging Face GPT-2 Conv1D layout) unless
// LinearOpts.TransW says [out, in], as for the tied output head whose
// weight is wte [V, C]. Raw backward kernels accumulate (+=) into the
// gradient slices they are given and skip any gradient passed as nil, so a
// caller pays only for the gradients it wants.
//
// # Gorgonia ops
//
// Token ids and targets are not graph nodes: an *IDs holder is given to the
// op at construction and read at every run, so a trainer refills IDs.Data in
// place between runs without rebuilding the graph.
//
// Each op owns its output buffers: they are allocated on the first run and
// reused afterwards. (The TapeMachine's own preallocation does not survive
// Reset, which clears its registers, so UsePreallocDo is implemented for
// completeness but rarely called.) A value read from an op's node after a run
// is therefore overwritten by the next run; copy it to keep it.
//
// Backward ops read state saved by their forward op during the same run
// (LayerNorm's mean and 1/σ, GELU's sigmoid, cross-entropy's softmax) and take
// the forward node as an input so the tape orders them after it.
//
// G.Grad asks every op on the path for the gradients of all its inputs and
// compiles all of them. An input that is neither among the nodes passed to
// G.Grad nor on a path to one (a frozen weight, or the data) gets no
// derivative node, and the backward op for it checks exactly that before
// doing any work: it returns a 1×1 placeholder without computing, so frozen
// weights cost no gradient product (see TestFrozenWeightsSkipGradientWork).
// TrainingSubgraph goes further and leaves those nodes out of the program.
//
// A bad id or target fails the run; gorgonia wraps the error without an
// Unwrap method, so use UnwrapVMError before errors.Is.
//
// Gradients follow the TapeMachine's semantics: with G.BindDualValues, every
// run adds its gradients into the parameters' dual values (d += g), and
// neither vm.Reset nor anything in this package clears them; the optimizer or
// trainer zeroes them between steps.
//
// Nodes with equal hashes are merged by gorgonia; every op writes a serial
// number unique to the instance into its hash, together with its parameters,
// so no two nodes of this package are ever merged.
package nn
