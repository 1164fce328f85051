package nn

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// The element-wise and row-wise loops of this package are scalar Go, so on
// training sizes (a 512×512 GELU, 512 LayerNorm rows) they gain from the
// other cores. Work is split into fixed-size chunks that the caller and
// long-lived helper goroutines claim from an atomic counter: the caller
// never waits for a busy helper to start (it takes the chunks itself), and
// no allocation is made per call. Chunks cover disjoint outputs and every
// sum keeps its serial order, so results are bit-identical whatever the
// number of cores. kernels.SetMaxThreads caps the goroutines of one loop,
// as it caps a product's.

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
	next     atomic.Int64   // start of the next unclaimed chunk
	chunks   sync.WaitGroup // chunks not yet finished
	refs     atomic.Int32   // caller + helpers that may still read the job
}

var (
	helperOnce  sync.Once
	helperQueue chan *parJob
	helperCount int

	jobsMu   sync.Mutex
	freeJobs []*parJob
)

func startHelpers() {
	helperCount = runtime.GOMAXPROCS(0) - 1
	helperQueue = make(chan *parJob, 4*max(helperCount, 1))
	for range helperCount {
		go func() {
			for j := range helperQueue {
				j.work()
				j.release()
			}
		}()
	}
}

// newJob returns a cleared job from the free list (a plain list: the jobs are
// small and long-lived, and sync.Pool would drop them at every GC).
func newJob(fn func(*parJob, int, int)) *parJob {
	jobsMu.Lock()
	var j *parJob
	if n := len(freeJobs); n > 0 {
		j = freeJobs[n-1]
		freeJobs = freeJobs[:n-1]
	}
	jobsMu.Unlock()
	if j == nil {
		j = new(parJob)
	}
	j.fn = fn
	return j
}

// run calls fn over [0, n) in chunks of grain and returns when all are done.
func (j *parJob) run(n, grain int) {
	grain = max(grain, 1)
	chunks := (n + grain - 1) / grain
	helperOnce.Do(startHelpers)
	if chunks <= 1 || helperCount == 0 || kernels.Threads() == 1 {
		if n > 0 {
			j.fn(j, 0, n)
		}
		j.refs.Store(1)
		j.release()
		return
	}
	j.n, j.grain = n, grain
	j.next.Store(0)
	j.chunks.Add(chunks)
	notify := min(helperCount, chunks-1, kernels.Threads()-1)
	j.refs.Store(int32(notify + 1))
	for range notify {
		select {
		case helperQueue <- j:
		default: // helpers saturated by other callers: do the work here
			j.refs.Add(-1)
		}
	}
	j.work()
	j.chunks.Wait()
	j.release()
}

func (j *parJob) work() {
	for {
		lo := int(j.next.Add(int64(j.grain))) - j.grain
		if lo >= j.n {
			return
		}
		j.fn(j, lo, min(lo+j.grain, j.n))
		j.chunks.Done()
	}
}

// release drops a reference; the last one returns the job to the free list.
func (j *parJob) release() {
	if j.refs.Add(-1) != 0 {
		return
	}
	j.fn = nil
	for i := range j.f {
		j.f[i] = nil
	}
	j.ids, j.d = nil, nil
	jobsMu.Lock()
	freeJobs = append(freeJobs, j)
	jobsMu.Unlock()
}

// rowGrain is the number of rows of width c per chunk.
func rowGrain(c int) int { return max(1, parGrain/max(c, 1)) }

// colGrain is the number of columns per chunk when a loop over rows rows is
// split by columns (for sums over rows, which must keep their row order);
// a multiple of 8 keeps chunks on 32-byte boundaries.
func colGrain(rows int) int { return max(8, parGrain/max(rows, 1)/8*8) }
