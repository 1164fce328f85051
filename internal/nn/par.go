package nn

// The element-wise and row-wise loops of this package are scalar Go, so on
// training sizes (a 512×512 GELU, 512 LayerNorm rows) they gain from the
// other cores. Work is split into fixed-size chunks, the items of a loop of
// the kernels' scheduler (kernels.Chunks over kernels.For), each loop's body
// a typed record of its slices and sizes: the caller never waits for a busy
// helper to start (it takes the chunks itself), and no allocation is made
// per call. Chunks cover disjoint outputs and every sum keeps its serial
// order, so results are bit-identical whatever the number of cores.
// kernels.SetMaxThreads caps the goroutines of one loop, as it caps a
// product's.

// parGrain is the number of elements per chunk: about 0.1 ms of scalar work,
// far above the cost of waking a helper, and large enough that a loop the
// size of one tiny-preset LayerNorm (512×128) stays on the caller: on a
// loaded machine a helper may start late, and a split that small measured
// no faster. A variable so that tests can split small inputs.
var parGrain = 1 << 16

// rowGrain is the number of rows of width c per chunk.
func rowGrain(c int) int { return max(1, parGrain/max(c, 1)) }

// colGrain is the number of columns per chunk when a loop over rows rows of
// width C is split by columns (for sums over rows, which must keep their
// row order): about parGrain elements per chunk, but never fewer than
// parGrain/256 columns (256 by default), in chunks of equal width, a
// multiple of 8 (32-byte boundaries). Narrow chunks are slow: a chunk reads
// a short piece of every row, rows C·4 bytes apart, and at C = 3072 (a
// 3-page stride) chunks of 64 columns, the earlier default, summed a
// 1024-row gradient ~10× slower than chunks of 256 (BenchmarkColumnSums:
// 8–13 ms against 0.7–1.2 ms), which made the bias gradients ~1.5% of a
// GPT-2 124M training step's CPU time.
func colGrain(C, rows int) int {
	minCols := max(parGrain/256, 1)
	chunks := max(1, min((rows*C+parGrain-1)/parGrain, C/minCols))
	return max(8, (C+chunks-1)/chunks+7) / 8 * 8
}
