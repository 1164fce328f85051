package nn

import (
	"github.com/galleon-ml/galleon/internal/kernels"
)

// The element-wise and row-wise loops of this package are scalar Go, so on
// training sizes (a 512×512 GELU, 512 LayerNorm rows) they gain from the
// other cores. Work is split into fixed-size chunks, the items of a loop of
// the kernels' scheduler (kernels.For): the caller never waits for a busy
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

// parJob describes one parallel loop: fn processes [lo, hi) of the range
// using the job's argument fields (a plain function, not a closure, so that
// starting a job does not allocate).
type parJob struct {
	fn  func(j *parJob, lo, hi int)
	f   [6][]float32
	ids []int32
	d   []float64
	i   [4]int
	x   float32

	n, grain int
}

var parJobs kernels.FreeList[parJob]

// newJob returns a cleared job from the pool.
func newJob(fn func(*parJob, int, int)) *parJob {
	j := parJobs.Get()
	j.fn = fn
	return j
}

// run calls fn over [0, n) in chunks of grain, returns when all are done,
// and returns the job to the pool.
func (j *parJob) run(n, grain int) {
	j.n, j.grain = n, max(grain, 1)
	kernels.For(kernels.Threads(), (n+j.grain-1)/j.grain, j)
	j.fn = nil
	for i := range j.f {
		j.f[i] = nil
	}
	j.ids, j.d = nil, nil
	parJobs.Put(j)
}

// Item runs chunk c.
func (j *parJob) Item(_, c int) {
	lo := c * j.grain
	j.fn(j, lo, min(lo+j.grain, j.n))
}

// rowGrain is the number of rows of width c per chunk.
func rowGrain(c int) int { return max(1, parGrain/max(c, 1)) }

// colGrain is the number of columns per chunk when a loop over rows rows is
// split by columns (for sums over rows, which must keep their row order);
// a multiple of 8 keeps chunks on 32-byte boundaries.
func colGrain(rows int) int { return max(8, parGrain/max(rows, 1)/8*8) }
