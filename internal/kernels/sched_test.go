package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countItems records how often each item ran and the largest worker index.
type countItems struct {
	hits    []atomic.Int32
	workers int
	bad     atomic.Bool
	busy    []atomic.Int32 // per worker: goroutines inside an item
	nested  bool
}

func (c *countItems) Item(w, i int) {
	if w < 0 || w >= c.workers {
		c.bad.Store(true)
		return
	}
	if c.busy[w].Add(1) != 1 {
		c.bad.Store(true) // two goroutines shared a worker index
	}
	c.hits[i].Add(1)
	if c.nested && i%7 == 0 {
		inner := newCountItems(5, 2)
		For(2, 5, inner)
		if !inner.ok() {
			c.bad.Store(true)
		}
	}
	c.busy[w].Add(-1)
}

func newCountItems(n, workers int) *countItems {
	return &countItems{hits: make([]atomic.Int32, n), workers: workers, busy: make([]atomic.Int32, workers)}
}

func (c *countItems) ok() bool {
	for i := range c.hits {
		if c.hits[i].Load() != 1 {
			return false
		}
	}
	return !c.bad.Load()
}

// TestFor checks that every item runs exactly once, with worker indices in
// range and never shared, from many goroutines at once and from inside an
// item.
func TestFor(t *testing.T) {
	for _, workers := range []int{1, 2, 3, 8} {
		for _, n := range []int{0, 1, 2, 7, 100, 1000} {
			c := newCountItems(n, workers)
			c.nested = true
			For(workers, n, c)
			if !c.ok() {
				t.Fatalf("workers %d, n %d: items not run exactly once on valid workers", workers, n)
			}
		}
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for r := 0; r < 50; r++ {
				c := newCountItems(64, 4)
				For(4, 64, c)
				if !c.ok() {
					t.Error("concurrent loops: items not run exactly once")
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestForOneThread checks that a cap of one thread keeps a loop on the
// caller, in order.
func TestForOneThread(t *testing.T) {
	prev := SetMaxThreads(1)
	defer SetMaxThreads(prev)
	var order []int
	For(0, 10, ItemFunc(func(w, i int) {
		if w != 0 {
			t.Errorf("worker %d with one thread", w)
		}
		order = append(order, i)
	}))
	for i, v := range order {
		if v != i {
			t.Fatalf("order %v", order)
		}
	}
	if len(order) != 10 {
		t.Fatalf("%d items ran, want 10", len(order))
	}
}

// TestForDoesNotAllocate checks the steady state of a multi-worker loop.
func TestForDoesNotAllocate(t *testing.T) {
	c := newCountItems(64, 2)
	run := func() {
		for i := range c.hits {
			c.hits[i].Store(0)
		}
		For(2, 64, c)
	}
	run()
	if a := testing.AllocsPerRun(20, run); a != 0 {
		t.Errorf("%v allocations per loop, want 0", a)
	}
}

func TestBufferPool(t *testing.T) {
	p := GetFloats(100)
	if len(*p) != 100 {
		t.Fatalf("len %d, want 100", len(*p))
	}
	PutFloats(p)
	q := GetFloats(50)
	if len(*q) != 50 || cap(*q) < 50 {
		t.Fatalf("len %d cap %d", len(*q), cap(*q))
	}
	PutFloats(q)
	// A full pool keeps the largest buffers.
	for i := 0; i < 2*bufPoolMax; i++ {
		s := make([]float32, i+1)
		PutFloats(&s)
	}
	bufPool.mu.Lock()
	n := len(bufPool.free)
	small := cap(*bufPool.free[0])
	for _, b := range bufPool.free {
		small = min(small, cap(*b))
	}
	bufPool.mu.Unlock()
	if n != bufPoolMax || small < bufPoolMax {
		t.Errorf("pool holds %d buffers, smallest %d", n, small)
	}
	var fl FreeList[int]
	x := fl.Get()
	*x = 7
	fl.Put(x)
	if y := fl.Get(); y != x {
		t.Error("FreeList did not return the freed object")
	}
}

// chunkBody marks the elements of its chunks and counts the chunks.
type chunkBody struct {
	hits   []atomic.Int32
	chunks *atomic.Int32
	grain  int
	bad    *atomic.Bool
}

func (b *chunkBody) Chunk(lo, hi int) {
	b.chunks.Add(1)
	if lo%b.grain != 0 || hi-lo > b.grain || hi <= lo {
		b.bad.Store(true)
	}
	for i := lo; i < hi; i++ {
		b.hits[i].Add(1)
	}
}

var testChunks Chunks[chunkBody, *chunkBody]

// TestChunks checks that Chunks.Run covers [0, n) exactly once in chunks of
// the grain, on odd sizes, and that a steady loop allocates nothing.
func TestChunks(t *testing.T) {
	for _, workers := range []int{0, 1, 3} {
		for _, n := range []int{0, 1, 7, 64, 1001} {
			for _, grain := range []int{0, 1, 5, 64, 2000} {
				var chunks atomic.Int32
				var bad atomic.Bool
				g := max(grain, 1)
				b := chunkBody{hits: make([]atomic.Int32, n), chunks: &chunks, grain: g, bad: &bad}
				testChunks.Run(workers, b, n, grain)
				if bad.Load() {
					t.Fatalf("workers %d, n %d, grain %d: chunk not aligned to the grain", workers, n, grain)
				}
				for i := range b.hits {
					if b.hits[i].Load() != 1 {
						t.Fatalf("workers %d, n %d, grain %d: element %d ran %d times", workers, n, grain, i, b.hits[i].Load())
					}
				}
				if want := (n + g - 1) / g; int(chunks.Load()) != want {
					t.Fatalf("workers %d, n %d, grain %d: %d chunks, want %d", workers, n, grain, chunks.Load(), want)
				}
			}
		}
	}
	var chunks atomic.Int32
	var bad atomic.Bool
	b := chunkBody{hits: make([]atomic.Int32, 256), chunks: &chunks, grain: 16, bad: &bad}
	testChunks.Run(2, b, 256, 16)
	if a := testing.AllocsPerRun(20, func() { testChunks.Run(2, b, 256, 16) }); a != 0 {
		t.Errorf("%v allocations per Chunks.Run, want 0", a)
	}
}

// rendezvous is a two-item loop whose first item waits for the second to
// start: it finishes in time only if a helper joins the loop.
type rendezvous struct {
	started chan struct{}
	missed  atomic.Bool
}

func (r *rendezvous) Item(_, i int) {
	if i == 1 {
		close(r.started)
		return
	}
	select {
	case <-r.started:
	case <-time.After(2 * time.Second):
		r.missed.Store(true)
	}
}

// TestForWakesHelperParkingDuringOffer offers loops at gaps around spinFor,
// when the helper is giving up polling and about to park. A wake-up lost in
// that window left the whole loop to its caller; here the caller's item
// would wait for a partner that never comes.
func TestForWakesHelperParkingDuringOffer(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs two Ps for a helper")
	}
	rounds := 3000
	if testing.Short() {
		rounds = 600
	}
	for k := range rounds {
		// Gaps from half to twice spinFor, in steps that do not repeat
		// the same phase.
		time.Sleep(spinFor/2 + time.Duration(k*37%150)*spinFor/100)
		r := &rendezvous{started: make(chan struct{})}
		For(2, 2, r)
		if r.missed.Load() {
			t.Fatalf("round %d: no helper joined a two-worker loop", k)
		}
	}
}
