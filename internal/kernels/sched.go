package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The scheduler: every parallel loop of galleon's kernels (the GEMMs, the
// attention kernels, the fused ops of internal/nn, the int8 layers) runs
// through For, over typed work items, on one set of helper goroutines.
//
// A loop's items are claimed in order from an atomic counter by the caller
// and by whichever helpers join it, so faster cores take more items and the
// caller never waits for a helper to start: if none is free, it works
// through the loop alone. Helpers are GOMAXPROCS−1 long-lived goroutines,
// started on first need. After a loop a helper polls for the next one for
// spinFor before parking: loops come back to back in a training step (a
// layer's forward, its backward, the next layer), and waking a parked
// goroutine costs tens of microseconds, a large part of a 256³ product.

// Items is the body of a parallel loop: Item(worker, i) processes item i.
// worker is in [0, workers) and is used by one goroutine at a time during a
// loop, so the body may keep per-worker scratch indexed by it. Callers pass
// a pointer to their (pooled) per-call state, so starting a loop allocates
// nothing.
type Items interface{ Item(worker, i int) }

// ItemFunc adapts a function to Items; the closure may allocate, so hot
// paths use a typed item instead.
type ItemFunc func(worker, i int)

// Item calls f(worker, i).
func (f ItemFunc) Item(worker, i int) { f(worker, i) }

// For runs body.Item(worker, i) for every i in [0, n) on up to workers
// goroutines, the caller's included, and returns when all have finished.
// workers ≤ 0 means Threads(). With one worker, or one item, it runs the
// items in order on the caller. It allocates nothing in steady state and
// is safe to call from many goroutines at once, and from inside an item.
func For(workers, n int, body Items) {
	if workers <= 0 {
		workers = Threads()
	}
	workers = min(workers, n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			body.Item(0, i)
		}
		return
	}
	l := getLoop()
	l.body, l.n = body, int64(n)
	l.next.Store(0)
	l.worker.Store(0)
	l.helpers.Store(int64(workers-1) * helperSlot) // open, nobody in
	offerLoop(l, workers-1)
	l.run(0)
	loopOffer.CompareAndSwap(l, nil)
	l.closeHelpers()
	l.body = nil // do not keep the caller's state alive
	putLoop(l)
}

// loop is the shared state of one multi-worker For.
type loop struct {
	body   Items
	n      int64
	next   atomic.Int64 // next unclaimed item
	_      [56]byte     // keep the claim counter on its own cache line
	worker atomic.Int32 // last worker index handed out (the caller is 0)

	// helpers counts the helpers working on the loop (low bits), the
	// places still open to them (helperSlot units), and whether the caller
	// has closed the loop to newcomers (helperClosed). The last helper to
	// leave a closed loop signals left.
	helpers atomic.Int64
	left    chan struct{}
}

const (
	helperSlot   = 1 << 20
	helperClosed = 1 << 50
	helperActive = helperSlot - 1

	// spinFor is how long an idle helper polls for a loop, and how long a
	// caller polls for its helpers to finish, before parking.
	spinFor = 100 * time.Microsecond
)

// run claims and processes items as worker w until none is left.
func (l *loop) run(w int) {
	for {
		i := l.next.Add(1) - 1
		if i >= l.n {
			return
		}
		l.body.Item(w, int(i))
	}
}

// join adds a helper to the loop if it is open and has a free place, and
// returns its worker index.
func (l *loop) join() (int, bool) {
	for {
		h := l.helpers.Load()
		if h&helperClosed != 0 || h < helperSlot {
			return 0, false
		}
		if l.helpers.CompareAndSwap(h, h-helperSlot+1) {
			return int(l.worker.Add(1)), true
		}
	}
}

// leave removes a helper; it is the helper's last access to the loop unless
// it is the last one out of a closed loop, which the caller is waiting for.
func (l *loop) leave() {
	if h := l.helpers.Add(-1); h&helperClosed != 0 && h&helperActive == 0 {
		l.left <- struct{}{}
	}
}

// closeHelpers stops helpers from joining and waits for those inside.
func (l *loop) closeHelpers() {
	for {
		h := l.helpers.Load()
		if !l.helpers.CompareAndSwap(h, (h|helperClosed)&^(helperClosed-helperSlot)) {
			continue
		}
		if h&helperActive == 0 {
			return
		}
		// The helpers are finishing their last items: poll before
		// parking, as waking a parked goroutine costs about as much.
		deadline := time.Now().Add(spinFor)
		for l.helpers.Load()&helperActive != 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		<-l.left // sent by the last helper out
		return
	}
}

var (
	loopOffer atomic.Pointer[loop]
	// loopWake holds wake-up tokens for parked helpers. It is buffered so
	// that a token sent while a helper is between giving up spinning and
	// parking is not lost (TestForWakesHelperParkingDuringOffer); a stale
	// token costs a woken helper one spinFor of polling. 256 bounds the
	// pending wake-ups, not the helpers.
	loopWake     = make(chan struct{}, 256)
	spinning     atomic.Int32 // helpers polling loopOffer
	helperMu     sync.Mutex
	helpersAlive atomic.Int32
)

// offerLoop makes an open loop visible to up to n helpers.
func offerLoop(l *loop, n int) {
	startHelpers(n)
	loopOffer.Store(l)
	// Wake parked helpers for the places the spinning ones will not take.
	// A full buffer means that many wake-ups are already pending; a token
	// left over once a loop is done only makes a helper poll for spinFor.
	for range n - int(spinning.Load()) {
		select {
		case loopWake <- struct{}{}:
		default:
			return
		}
	}
}

func startHelpers(n int) {
	n = min(n, runtime.GOMAXPROCS(0)-1)
	if int(helpersAlive.Load()) >= n {
		return
	}
	helperMu.Lock()
	defer helperMu.Unlock()
	for int(helpersAlive.Load()) < n {
		helpersAlive.Add(1)
		go helper()
	}
}

func helper() {
	for {
		spinning.Add(1)
		deadline := time.Now().Add(spinFor)
		for {
			if l, w, ok := offeredLoop(); ok {
				spinning.Add(-1)
				l.run(w)
				l.leave()
				spinning.Add(1)
				deadline = time.Now().Add(spinFor)
				continue
			}
			if time.Now().After(deadline) {
				break
			}
			// Let other goroutines of this P run meanwhile.
			runtime.Gosched()
		}
		spinning.Add(-1)
		// Look once more after leaving the spinning count. offerLoop
		// stores its loop, then reads the count: if it read it after the
		// decrement above, it sent this helper a token; if before, its
		// store came first and this load sees the loop.
		if l, w, ok := offeredLoop(); ok {
			l.run(w)
			l.leave()
			continue
		}
		<-loopWake
	}
}

// offeredLoop joins the offered loop, if there is one with a free place.
func offeredLoop() (*loop, int, bool) {
	l := loopOffer.Load()
	if l == nil {
		return nil, 0, false
	}
	w, ok := l.join()
	return l, w, ok
}

var loops FreeList[loop]

func getLoop() *loop {
	l := loops.Get()
	if l.left == nil {
		l.left = make(chan struct{}, 1)
	}
	return l
}

func putLoop(l *loop) { loops.Put(l) }

// Chunker is the body of a loop over a range cut into chunks: Chunk(lo, hi)
// processes elements (or rows, or columns) [lo, hi).
type Chunker interface{ Chunk(lo, hi int) }

// Chunks runs loops over [0, n) cut into chunks of a fixed grain, whose
// body is a typed value B (a struct of the loop's slices and sizes, with a
// Chunk method on *B). The loops' state is pooled, one list per body type,
// so a steady caller allocates nothing. The zero value is ready to use;
// declare one per body type:
//
//	var geluLoops kernels.Chunks[geluBody, *geluBody]
//	geluLoops.Run(0, geluBody{y, x}, len(x), grain)
type Chunks[B any, P interface {
	*B
	Chunker
}] struct {
	free FreeList[chunkLoop[B, P]]
}

// chunkLoop is one running loop of a Chunks: the Items of For.
type chunkLoop[B any, P interface {
	*B
	Chunker
}] struct {
	body     B
	n, grain int
}

// Item runs chunk c.
func (l *chunkLoop[B, P]) Item(_, c int) {
	lo := c * l.grain
	P(&l.body).Chunk(lo, min(lo+l.grain, l.n))
}

// Run calls body.Chunk over [0, n) in chunks of grain (at least 1) on up
// to workers goroutines (≤ 0 means Threads()), and returns when all are
// done. Chunks cover disjoint parts of the range, so a body that writes
// only its chunk's outputs gives the same bits whatever the number of
// workers.
func (c *Chunks[B, P]) Run(workers int, body B, n, grain int) {
	if n <= 0 {
		return
	}
	l := c.free.Get()
	l.body, l.n, l.grain = body, n, max(grain, 1)
	For(workers, (n+l.grain-1)/l.grain, l)
	var zero B
	l.body = zero // do not keep the caller's slices alive
	c.free.Put(l)
}
