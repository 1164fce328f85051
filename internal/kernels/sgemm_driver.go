package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Blocking of the packed path. The micro-kernel computes sgemmMR×sgemmNR
// tiles of C. Around it, a compute task owns an mc×nt tile of C and walks k
// in steps of sgemmKC: for each 16-column B micro-panel (kc·64 bytes = 16 KiB,
// held in L1) it sweeps the mc rows of packed A (mc·kc·4 bytes, held in L2).
const (
	sgemmMR = 6
	sgemmNR = 16

	// sgemmKC is the depth of one micro-kernel call: long enough to amortise
	// loading and storing the C tile, short enough that the B micro-panel
	// (16·KC floats) and an A micro-panel (6·KC floats) share the 32 KiB L1.
	sgemmKC = 256

	// sgemmMC is the default row height of a compute task.
	sgemmMC = 96

	// sgemmNT is the default (maximum) column width of a compute task.
	sgemmNT = 512

	// sgemmPackMax bounds each packed operand (floats): 8 MiB each. Larger
	// products are cut into chunks of m, n and k that are packed and
	// computed one after another.
	sgemmPackMax = 1 << 21

	// Granularity of the packing tasks that threads share.
	packARows = 48
	packBCols = 128

	// sgemmParWork is the smallest m·n·k worth waking a second core for:
	// about 20 µs of single-core work, well above the cost of a hand-off.
	sgemmParWork = 1 << 21
)

// sgemmJob is one packed-path product and everything its threads share: the
// arguments, the blocking, the packed operands and the work queue. Jobs are
// pooled with their buffers, so steady-state calls allocate nothing.
//
// The work is a fixed sequence of tasks numbered by tickets. For each chunk
// (step) of the product there is a packing phase (tasks that pack pieces of A
// and B) followed by a compute phase (tasks that each own a tile of C). A
// participant takes the next ticket from next, runs it, and counts it in done;
// a task of a phase starts only once done has reached the phase's first
// ticket, i.e. once every earlier task has finished. Participants may join at
// any time (a helper that was slow to wake simply finds fewer tickets), and
// the caller always participates, so the job completes even if no helper is
// free.
type sgemmJob struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int

	// Chunking: sizes and counts along m, n and k.
	mChunk, nChunk, kChunk    int
	mChunks, nChunks, kChunks int
	// Compute task (tile) sizes.
	mc, nt int

	packA, packB []float32 // 64-byte aligned views of bufA, bufB
	bufA, bufB   []float32

	total int64 // number of tickets
	next  atomic.Int64
	_     [56]byte // keep the two counters on separate cache lines
	done  atomic.Int64
	wg    sync.WaitGroup
}

// sgemmStep is the geometry of one chunk: rows i0…i0+mm, columns j0…j0+nn
// and depth p0…p0+kk of the product, whether it packs B (the first chunk of
// each (n, k) pair does; later row chunks reuse it) and its beta.
type sgemmStep struct {
	i0, mm, j0, nn, p0, kk int
	packsB                 bool
	beta                   float32
	nPackA, nPackB         int // packing tasks
	tilesM, tilesN         int // compute tasks: tilesM × tilesN
}

func (j *sgemmJob) step(s int) sgemmStep {
	// Loop order n-chunk, k-chunk, m-chunk: a packed B chunk serves every
	// row chunk before it is replaced.
	iq := s % j.mChunks
	kq := (s / j.mChunks) % j.kChunks
	jq := s / (j.mChunks * j.kChunks)
	st := sgemmStep{
		i0: iq * j.mChunk, j0: jq * j.nChunk, p0: kq * j.kChunk,
		packsB: iq == 0,
		beta:   j.beta,
	}
	st.mm = min(j.mChunk, j.m-st.i0)
	st.nn = min(j.nChunk, j.n-st.j0)
	st.kk = min(j.kChunk, j.k-st.p0)
	if kq > 0 {
		st.beta = 1
	}
	st.nPackA = ceilDiv(st.mm, packARows)
	if st.packsB {
		st.nPackB = ceilDiv(st.nn, packBCols)
	}
	st.tilesM = ceilDiv(st.mm, j.mc)
	st.tilesN = ceilDiv(st.nn, j.nt)
	return st
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func roundUp(a, b int) int { return ceilDiv(a, b) * b }

// sgemmPacked runs a product through the packing path, on as many cores as
// its size warrants.
func sgemmPacked(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	j := getSgemmJob()
	j.transA, j.transB, j.m, j.n, j.k = transA, transB, m, n, k
	j.alpha, j.beta, j.a, j.b, j.c = alpha, beta, a, b, c
	j.lda, j.ldb, j.ldc = lda, ldb, ldc
	j.next.Store(0)
	j.done.Store(0)
	threads := runtime.GOMAXPROCS(0)
	if work := m * n * k; work < sgemmParWork*threads {
		threads = max(1, min(threads, work/sgemmParWork))
	}
	j.plan(threads)
	// Recruit idle helpers; when none is idle (other products are running)
	// the caller does the work alone rather than queueing behind them.
	if threads > 1 {
		startSgemmHelpers(threads - 1)
	recruit:
		for range threads - 1 {
			j.wg.Add(1)
			select {
			case sgemmWork <- j:
			default:
				j.wg.Done()
				break recruit
			}
		}
	}
	j.run()
	j.wg.Wait()
	j.a, j.b, j.c = nil, nil, nil // do not keep the caller's memory alive
	putSgemmJob(j)
}

// plan chooses the chunks, the tile sizes and the ticket count, and sizes
// the packing buffers.
func (j *sgemmJob) plan(threads int) {
	j.kChunk = min(j.k, max(sgemmKC, sgemmPackMax/max(j.m, j.n)/sgemmKC*sgemmKC))
	j.kChunks = ceilDiv(j.k, j.kChunk)
	j.mChunk, j.mChunks = chunk(j.m, sgemmMR, sgemmPackMax/j.kChunk)
	j.nChunk, j.nChunks = chunk(j.n, sgemmNR, sgemmPackMax/j.kChunk)

	// Tiles: start from the cache-friendly size and split (n first, then
	// m) until every thread has several tiles to draw from, so that the
	// dynamic queue can even out cores slowed down by other work.
	j.mc = min(sgemmMC, roundUp(j.mChunk, sgemmMR))
	j.nt = min(sgemmNT, roundUp(j.nChunk, sgemmNR))
	if threads > 1 {
		want := 4 * threads
		for ceilDiv(j.mChunk, j.mc)*ceilDiv(j.nChunk, j.nt) < want {
			switch {
			case j.nt >= 2*64 && j.nt >= j.mc:
				j.nt = roundUp(j.nt/2, sgemmNR)
			case j.mc >= 2*24:
				j.mc = roundUp(j.mc/2, sgemmMR)
			case j.nt >= 2*32:
				j.nt = roundUp(j.nt/2, sgemmNR)
			default:
				want = 0
			}
		}
	}

	steps := j.mChunks * j.nChunks * j.kChunks
	j.total = 0
	for s := range steps {
		st := j.step(s)
		j.total += int64(st.nPackA + st.nPackB + st.tilesM*st.tilesN)
	}
	j.packA = alignedFloats(&j.bufA, roundUp(j.mChunk, sgemmMR)*j.kChunk)
	j.packB = alignedFloats(&j.bufB, roundUp(j.nChunk, sgemmNR)*j.kChunk)
}

// chunk splits n into the fewest chunks of at most limit (but at least
// align) elements, of equal size rounded up to align; it returns the chunk
// size and count.
func chunk(n, align, limit int) (size, count int) {
	limit = max(align, limit/align*align)
	count = ceilDiv(n, limit)
	size = roundUp(ceilDiv(n, count), align)
	return size, ceilDiv(n, size)
}

// alignedFloats returns n floats of *buf starting on a 64-byte boundary, so
// that no packed vector load straddles cache lines; it grows *buf if needed.
func alignedFloats(buf *[]float32, n int) []float32 {
	const align = 64 / 4
	if cap(*buf) < n+align {
		*buf = make([]float32, n+align)
	}
	b := (*buf)[:cap(*buf)]
	off := int(uintptr(unsafe.Pointer(&b[0])) % 64 / 4)
	if off != 0 {
		off = align - off
	}
	return b[off : off+n]
}

// run takes tickets until none is left.
func (j *sgemmJob) run() {
	var tmp [sgemmMR * sgemmNR]float32
	s, phase := 0, 0 // current step and phase (0 pack, 1 compute)
	st := j.step(0)
	start, size := int64(0), int64(st.nPackA+st.nPackB)
	for {
		t := j.next.Add(1) - 1
		if t >= j.total {
			return
		}
		for t >= start+size {
			start += size
			if phase == 0 {
				phase, size = 1, int64(st.tilesM*st.tilesN)
			} else {
				s++
				st = j.step(s)
				phase, size = 0, int64(st.nPackA+st.nPackB)
			}
		}
		// Wait for the earlier phases; they are short and in progress on
		// other cores, so yield rather than sleep.
		for j.done.Load() < start {
			runtime.Gosched()
		}
		i := int(t - start)
		if phase == 0 {
			j.packTask(&st, i)
		} else {
			j.computeTile(&st, i/st.tilesN, i%st.tilesN, &tmp)
		}
		j.done.Add(1)
	}
}

func (j *sgemmJob) packTask(st *sgemmStep, i int) {
	if i < st.nPackA {
		r0 := i * packARows
		rows := min(packARows, st.mm-r0)
		packA(j.packA[r0*st.kk:], j.transA, j.a, j.lda, st.i0+r0, rows, st.p0, st.kk)
		return
	}
	c0 := (i - st.nPackA) * packBCols
	cols := min(packBCols, st.nn-c0)
	packB(j.packB[c0*st.kk:], j.transB, j.b, j.ldb, st.p0, st.kk, st.j0+c0, cols)
}

// computeTile computes tile (ti, tj) of the step's part of C.
func (j *sgemmJob) computeTile(st *sgemmStep, ti, tj int, tmp *[sgemmMR * sgemmNR]float32) {
	r0, c0 := ti*j.mc, tj*j.nt
	rows, cols := min(j.mc, st.mm-r0), min(j.nt, st.nn-c0)
	kk, ldc, alpha := st.kk, j.ldc, j.alpha
	for pc := 0; pc < kk; pc += sgemmKC {
		kc := min(sgemmKC, kk-pc)
		beta := st.beta
		if pc > 0 {
			beta = 1
		}
		for jr := 0; jr < cols; jr += sgemmNR {
			bp := j.packB[(c0+jr)*kk+pc*sgemmNR:]
			nr := min(sgemmNR, cols-jr)
			for ir := 0; ir < rows; ir += sgemmMR {
				ap := j.packA[(r0+ir)*kk+pc*sgemmMR:]
				mr := min(sgemmMR, rows-ir)
				off := (st.i0+r0+ir)*ldc + st.j0 + c0 + jr
				if mr == sgemmMR && nr == sgemmNR {
					sgemmKernel(kc, ap, bp, j.c[off:], ldc, alpha, beta)
					continue
				}
				// Edge tile: compute it whole into tmp, copy back the part
				// inside C.
				sgemmKernel(kc, ap, bp, tmp[:], sgemmNR, 1, 0)
				for r := range mr {
					crow := j.c[off+r*ldc : off+r*ldc+nr]
					trow := tmp[r*sgemmNR : r*sgemmNR+nr]
					if beta == 0 {
						for x, v := range trow {
							crow[x] = alpha * v
						}
					} else {
						for x, v := range trow {
							crow[x] = alpha*v + beta*crow[x]
						}
					}
				}
			}
		}
	}
}

// sgemmKernel runs the micro-kernel of the selected implementation. The
// slice expressions are the bounds checks that keep the assembly in bounds.
func sgemmKernel(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	if useAVX2 {
		_ = a[kc*sgemmMR-1]
		_ = b[kc*sgemmNR-1]
		_ = c[(sgemmMR-1)*ldc+sgemmNR-1]
		sgemmKernel6x16AVX2(kc, &a[0], &b[0], &c[0], ldc, alpha, beta)
		return
	}
	sgemmKernelGo(kc, a, b, c, ldc, alpha, beta)
}

// The helpers: GOMAXPROCS-1 goroutines, started on first need, that wait on
// an unbuffered channel. A send succeeds only when a helper is idle, so
// concurrent products never wait for each other's helpers.
var (
	sgemmWork     = make(chan *sgemmJob)
	sgemmHelperMu sync.Mutex
	sgemmHelpersN atomic.Int32
)

func startSgemmHelpers(n int) {
	if int(sgemmHelpersN.Load()) >= n {
		return
	}
	sgemmHelperMu.Lock()
	defer sgemmHelperMu.Unlock()
	for int(sgemmHelpersN.Load()) < n {
		sgemmHelpersN.Add(1)
		go sgemmHelper()
	}
}

func sgemmHelper() {
	for j := range sgemmWork {
		j.run()
		j.wg.Done() // last touch of j: it may be reused right after
	}
}

// Pooled jobs. A plain free list rather than sync.Pool: the buffers are
// megabytes, and sync.Pool drops its contents at every other GC, which in a
// training loop would mean re-allocating them over and over. The list is
// bounded, so a burst of concurrent callers does not pin memory forever.
var (
	sgemmJobsMu sync.Mutex
	sgemmJobs   []*sgemmJob
)

func getSgemmJob() *sgemmJob {
	sgemmJobsMu.Lock()
	defer sgemmJobsMu.Unlock()
	if n := len(sgemmJobs); n > 0 {
		j := sgemmJobs[n-1]
		sgemmJobs = sgemmJobs[:n-1]
		return j
	}
	return new(sgemmJob)
}

func putSgemmJob(j *sgemmJob) {
	sgemmJobsMu.Lock()
	defer sgemmJobsMu.Unlock()
	if len(sgemmJobs) < 2*runtime.GOMAXPROCS(0) {
		sgemmJobs = append(sgemmJobs, j)
	}
}
