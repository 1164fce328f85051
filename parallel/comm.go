package parallel

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Communicator is one rank's handle on a group of ranks that exchange
// float32 buffers. Every collective must be called by all ranks of the group
// in the same order with buffers of the same length; reductions are sums.
// Implementations must be deterministic: the result of a reduction may not
// depend on timing, and every element of a sum is added in rank order.
type Communicator interface {
	// Rank returns this rank's index in [0, Size()).
	Rank() int
	// Size returns the number of ranks.
	Size() int
	// AllReduce replaces buf, on every rank, with the element-wise sum of
	// all ranks' buf.
	AllReduce(buf []float32) error
	// ReduceScatter sums buf across ranks, leaving each rank with its own
	// part of the sum: counts[r] elements per rank r, in rank order,
	// summing to len(buf). Rank r's part is written in place at
	// buf[sum(counts[:r]) : sum(counts[:r+1])]; the rest of buf is left
	// unspecified.
	ReduceScatter(buf []float32, counts []int) error
	// AllGather is the inverse layout: rank r contributes its part of buf
	// (counts as for ReduceScatter) and every rank receives all parts in
	// place.
	AllGather(buf []float32, counts []int) error
	// Broadcast copies root's buf into every rank's buf.
	Broadcast(buf []float32, root int) error
	// Barrier returns when every rank has entered it.
	Barrier() error
	// Abort makes the group's pending and future collectives fail with err
	// (in process), or terminates the job (MPI). Used when a rank panics
	// inside a step, so that no rank waits forever.
	Abort(err error)
}

// ErrAborted is wrapped by the errors that collectives of an aborted group
// return.
var ErrAborted = errors.New("parallel: group aborted")

// Group is an in-process communicator group: Size ranks that are goroutines
// of this process. Collectives read the other ranks' buffers directly (no
// copies besides the result), and each element of a sum is added in rank
// order by the rank that owns it, so results are bit-for-bit deterministic.
type Group struct {
	n int

	mu      sync.Mutex
	cond    *sync.Cond
	gen     uint64
	arrived int
	err     error

	bufs [][]float32 // posted by each rank for the current collective
	ints [][]int     // counts posted by each rank
	root []int       // roots posted by each rank (Broadcast)
	op   []string    // the collective each rank entered
}

// NewGroup creates an in-process group of n ranks.
func NewGroup(n int) (*Group, error) {
	if n <= 0 {
		return nil, fmt.Errorf("parallel: group of %d ranks", n)
	}
	g := &Group{n: n, bufs: make([][]float32, n), ints: make([][]int, n), root: make([]int, n), op: make([]string, n)}
	g.cond = sync.NewCond(&g.mu)
	return g, nil
}

// Size returns the number of ranks.
func (g *Group) Size() int { return g.n }

// Comm returns the communicator of rank r; each rank's goroutine uses its
// own.
func (g *Group) Comm(r int) (Communicator, error) {
	if r < 0 || r >= g.n {
		return nil, fmt.Errorf("parallel: rank %d of a group of %d", r, g.n)
	}
	return &inProc{g: g, rank: r}, nil
}

// Abort fails every pending and future collective of the group with an error
// wrapping ErrAborted and err. The first call wins.
func (g *Group) Abort(err error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = fmt.Errorf("%w: %w", ErrAborted, err)
	}
	g.cond.Broadcast()
	g.mu.Unlock()
}

// barrier waits for all ranks or an abort.
func (g *Group) barrier() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	g.arrived++
	if g.arrived == g.n {
		g.arrived = 0
		g.gen++
		g.cond.Broadcast()
		return nil
	}
	gen := g.gen
	for g.gen == gen && g.err == nil {
		g.cond.Wait()
	}
	if g.gen == gen {
		return g.err
	}
	return nil
}

type inProc struct {
	g    *Group
	rank int

	sent    atomic.Int64 // BytesSent
	scratch []float32    // the bfloat16 words this rank posts (bf16comm.go)
	srcs    [][]uint16   // the ranks' posted words as bfloat16, per reduce-scatter
}

func (c *inProc) Rank() int       { return c.rank }
func (c *inProc) Size() int       { return c.g.n }
func (c *inProc) Abort(err error) { c.g.Abort(err) }
func (c *inProc) Barrier() error  { return c.g.barrier() }

// post publishes this rank's arguments and waits for everybody's; it then
// checks that all ranks passed the same shape, so a mismatch is reported
// by every rank alike.
func (c *inProc) post(name string, buf []float32, counts []int, root int) error {
	g := c.g
	g.mu.Lock()
	g.bufs[c.rank], g.ints[c.rank], g.root[c.rank], g.op[c.rank] = buf, counts, root, name
	g.mu.Unlock()
	if err := g.barrier(); err != nil {
		return err
	}
	for q := range g.n {
		if g.op[q] != name || len(g.bufs[q]) != len(buf) || g.root[q] != root || !equalInts(g.ints[q], counts) {
			// Leave the collective together before reporting.
			if err := g.barrier(); err != nil {
				return err
			}
			return fmt.Errorf("parallel: %s: rank %d passed %d elements (counts %v, root %d), rank %d called %s with %d (counts %v, root %d)",
				name, c.rank, len(buf), counts, root, q, g.op[q], len(g.bufs[q]), g.ints[q], g.root[q])
		}
	}
	return nil
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkCounts validates counts against n ranks and len elements and returns
// the offsets (len n+1).
func checkCounts(name string, counts []int, n, length int) ([]int, error) {
	if len(counts) != n {
		return nil, fmt.Errorf("parallel: %s: %d counts for %d ranks", name, len(counts), n)
	}
	offs := make([]int, n+1)
	for i, k := range counts {
		if k < 0 {
			return nil, fmt.Errorf("parallel: %s: negative count %d", name, k)
		}
		offs[i+1] = offs[i] + k
	}
	if offs[n] != length {
		return nil, fmt.Errorf("parallel: %s: counts sum to %d for a buffer of %d", name, offs[n], length)
	}
	return offs, nil
}

// sumInto writes, for every j in [lo, hi), dst[j] = bufs[0][j] + bufs[1][j]
// + … in rank order. dst may be one of bufs: each element is read from all
// buffers before it is written.
func sumInto(dst []float32, bufs [][]float32, lo, hi int) {
	const block = 2048
	var acc [block]float32
	for b := lo; b < hi; b += block {
		e := min(b+block, hi)
		a := acc[:e-b]
		copy(a, bufs[0][b:e])
		for q := 1; q < len(bufs); q++ {
			src := bufs[q][b:e]
			for i := range a {
				a[i] += src[i]
			}
		}
		copy(dst[b:e], a)
	}
}

func (c *inProc) ReduceScatter(buf []float32, counts []int) error {
	offs, err := checkCounts("reduce-scatter", counts, c.g.n, len(buf))
	if err != nil {
		return err
	}
	if err := c.post("reduce-scatter", buf, counts, -1); err != nil {
		return err
	}
	// Only this rank reads its part of the other buffers, so it may write
	// its own part in place.
	sumInto(buf, c.g.bufs, offs[c.rank], offs[c.rank+1])
	c.sent.Add(reduceScatterBytes(counts, c.rank, 4))
	return c.g.barrier()
}

func (c *inProc) AllGather(buf []float32, counts []int) error {
	offs, err := checkCounts("all-gather", counts, c.g.n, len(buf))
	if err != nil {
		return err
	}
	if err := c.post("all-gather", buf, counts, -1); err != nil {
		return err
	}
	for q := range c.g.n {
		if q != c.rank {
			copy(buf[offs[q]:offs[q+1]], c.g.bufs[q][offs[q]:offs[q+1]])
		}
	}
	c.sent.Add(allGatherBytes(counts, c.rank, 4))
	return c.g.barrier()
}

func (c *inProc) AllReduce(buf []float32) error {
	counts := evenCounts(len(buf), c.g.n)
	if err := c.ReduceScatter(buf, counts); err != nil {
		return err
	}
	return c.AllGather(buf, counts)
}

func (c *inProc) Broadcast(buf []float32, root int) error {
	if root < 0 || root >= c.g.n {
		return fmt.Errorf("parallel: broadcast from rank %d of %d", root, c.g.n)
	}
	if err := c.post("broadcast", buf, nil, root); err != nil {
		return err
	}
	if c.rank != root {
		copy(buf, c.g.bufs[root])
	} else {
		c.sent.Add(int64(len(buf)) * int64(c.g.n-1) * 4)
	}
	return c.g.barrier()
}

// evenCounts splits n elements over k ranks, the first n%k ranks taking one
// more.
func evenCounts(n, k int) []int {
	counts := make([]int, k)
	for i := range counts {
		counts[i] = n / k
		if i < n%k {
			counts[i]++
		}
	}
	return counts
}
