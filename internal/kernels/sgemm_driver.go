package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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

	// sgemmMC is the default row height of a compute task, and the unit in
	// which A is packed: 96 rows × KC is 96 KiB of packed A, which stays in
	// the 1 MiB L2 beside the task's part of C. Heights from 48 to 192 ran
	// within 3% of each other (A/B runs, 2 cores, 256³ to 1024³ and
	// 2048×256×768); 96 was never worse than 1%.
	sgemmMC = 96

	// sgemmNT is the default (maximum) column width of a compute task: 512
	// columns × 96 rows of C (192 KiB) stay in L2 across the KC steps; 256
	// and 1024 measured the same within noise.
	sgemmNT = 512

	// sgemmTilesPerThread is how many tiles per thread plan aims for when
	// threads share a product, so that the dynamic queue can balance them.
	sgemmTilesPerThread = 4

	// packBCols is the unit in which B is packed: four micro-panels.
	packBCols = 4 * sgemmNR

	// sgemmPackMax bounds each packed operand (floats): 8 MiB each. Larger
	// products are cut into chunks of m, n and k that are packed and
	// computed one after another.
	sgemmPackMax = 1 << 21

	// sgemmParWork is the smallest m·n·k per thread worth waking another
	// core for: about 20 µs of single-core work, well above the cost of a
	// hand-off, for each kernel (~100 and ~10 GFLOP/s per core).
	sgemmParWorkAVX2 = 1 << 20
	sgemmParWorkGo   = 1 << 17
)

// sgemmJob is one packed-path product and everything its threads share: the
// arguments, the blocking and the packed operands. Jobs and their buffers are
// pooled, so steady-state calls allocate nothing.
//
// Work is handed out as tiles of C, numbered by tickets in chunk order (a
// chunk, or step, is the part of the product whose operands fit the packing
// buffers; most products are one step). The tickets are the items of a loop
// of the scheduler (For, sched.go): a participant claims the next one,
// computes the tile, and counts it in done; the first tile of a step waits
// until done shows every tile of the previous step finished, as the buffers
// are then overwritten. Participants may join at any time (a helper slow to
// wake simply finds fewer tickets), and the caller always participates, so
// the job completes even if no helper is free.
//
// Packing is done lazily, by the first tile that needs a piece of A (a row
// block of mc rows) or of B (a group of packBCols columns), which claims it
// in stateA/stateB. A tile that needs a piece another thread is packing
// packs some other unclaimed piece meanwhile. So packing is shared between
// threads and overlaps computation, with no barrier between the two.
type sgemmJob struct {
	transA, transB bool
	gemv           int // 0, or gemvRowMode or gemvColMode (see sgemvParallel)
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
	// bias, when set (SgemmBias, AVX-512 path only), is added to every
	// row of C by the micro-kernel of the first pass over each tile.
	bias []float32
	// directA: the AVX-512 kernel reads A (transposed or not) in place,
	// unpacked, in tiles of whole 12-row groups (sgemmReadsAInPlace).
	directA bool

	// Chunking: sizes and counts along m, n and k.
	mChunk, nChunk, kChunk    int
	mChunks, nChunks, kChunks int
	// Blocking in force, and the compute task (tile) sizes.
	blk    sgemmBlocking
	mc, nt int

	packA, packB []float32  // 64-byte aligned views of bufA, bufB
	bufA, bufB   *[]float32 // from the buffer pool (bufpool.go) while the job runs
	// Packing state of each A row block and B column group: 2s+1 while
	// being packed for step s, 2s+2 once packed, less if not yet packed.
	stateA, stateB []atomic.Int64

	total int64 // number of tickets (tiles)
	done  atomic.Int64

	// Threads parked in wait, and what they park on. A broadcast wakes them
	// all to re-check their own condition: with one token per waiter, a
	// thread woken for another's piece could take that token and park
	// again, leaving the other asleep for good (seen as a hang).
	waiters atomic.Int32
	mu      sync.Mutex
	parked  *sync.Cond
}

// sgemmStep is the geometry of one chunk: rows i0…i0+mm, columns j0…j0+nn
// and depth p0…p0+kk of the product, whether it packs B (the first chunk of
// each (n, k) pair does; later row chunks reuse it) and its beta.
type sgemmStep struct {
	s                      int // index
	i0, mm, j0, nn, p0, kk int
	packsB                 bool
	beta                   float32
	tilesM, tilesN         int
}

func (j *sgemmJob) step(s int) sgemmStep {
	// Loop order n-chunk, k-chunk, m-chunk: a packed B chunk serves every
	// row chunk before it is replaced.
	iq := s % j.mChunks
	kq := (s / j.mChunks) % j.kChunks
	jq := s / (j.mChunks * j.kChunks)
	st := sgemmStep{
		s:  s,
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
	st.tilesM = ceilDiv(st.mm, j.mc)
	st.tilesN = ceilDiv(st.nn, j.nt)
	return st
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func roundUp(a, b int) int { return ceilDiv(a, b) * b }

// sgemmPacked runs a product through the packing path, on as many cores as
// its size warrants.
func sgemmPacked(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemmPackedBlocking(sgemmDefaultBlocking(), transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// sgemmBlocking is the cache blocking of the packed path: the depth kc of
// one micro-kernel call, and the default row height mc and (maximum)
// column width nt of a compute task.
type sgemmBlocking struct {
	kc, mc, nt int
	// packA packs every A, even one the AVX-512 path could read in place
	// (sgemmReadsAInPlace); BenchmarkSgemmDirectA compares the two.
	packA bool
}

// sgemmDefaultBlocking returns the blocking tuned for the micro-kernel in
// use (see the constants above and sgemm512.go).
func sgemmDefaultBlocking() sgemmBlocking {
	if sgemmAVX512 {
		return sgemmBlocking{kc: sgemmKC512, mc: sgemmMC512, nt: sgemmNT512}
	}
	return sgemmBlocking{kc: sgemmKC, mc: sgemmMC, nt: sgemmNT}
}

// sgemmPackedBlocking is sgemmPacked with the given blocking; the sweep
// benchmark (BenchmarkSgemmBlocking) calls it directly.
func sgemmPackedBlocking(blk sgemmBlocking, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemmPackedBias(blk, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nil)
}

// sgemmPackedBias is sgemmPackedBlocking with a bias row added to the
// product (nil for none; the AVX-512 path only, see sgemmJob.bias).
func sgemmPackedBias(blk sgemmBlocking, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, bias []float32) {
	j := getSgemmJob()
	j.bias = bias
	j.blk = blk
	j.transA, j.transB, j.m, j.n, j.k = transA, transB, m, n, k
	j.alpha, j.beta, j.a, j.b, j.c = alpha, beta, a, b, c
	j.lda, j.ldb, j.ldc = lda, ldb, ldc
	j.done.Store(0)
	threads := Threads()
	parWork := sgemmParWorkGo
	if sgemmAsm() {
		parWork = sgemmParWorkAVX2
	}
	if work := m * n * k; work < parWork*threads {
		threads = max(1, min(threads, work/parWork))
	}
	j.gemv = 0
	// The transposed in-place kernels have no bias variant.
	j.directA = sgemmAVX512 && !blk.packA && sgemmReadsAInPlace(transA, lda) && !(transA && bias != nil)
	j.plan(threads)
	j.execute(threads)
}

// execute runs a planned job's tickets on the caller and up to threads-1
// helpers, and returns the job and its buffers to their pools.
func (j *sgemmJob) execute(threads int) {
	For(threads, int(j.total), j)
	j.a, j.b, j.c, j.bias = nil, nil, nil, nil // do not keep the caller's memory alive
	PutFloats(j.bufA)
	PutFloats(j.bufB)
	j.bufA, j.bufB, j.packA, j.packB = nil, nil, nil, nil
	putSgemmJob(j)
}

// Matrix-vector products split over threads by ranges of their output.
const (
	gemvRowMode = 1 // m == 1: c (a row) = alpha·x·op(B) + beta·c
	gemvColMode = 2 // n == 1: c (a column) = alpha·op(A)·y + beta·c

	// gemvTileMin is the least number of outputs a thread takes at a time.
	gemvTileMin = 64

	// sgemvParWork is the smallest (outputs × k) per thread worth waking
	// another core for: ~20 µs at ~40 (assembly) or ~4 (Go) GFLOP/s.
	sgemvParWorkAVX2 = 1 << 18
	sgemvParWorkGo   = 1 << 15
)

// gemvThreads returns how many threads a matrix-vector product of outs
// outputs, each a k-term sum, is worth.
func gemvThreads(outs, k int) int {
	parWork := sgemvParWorkGo
	if sgemmAsm() {
		parWork = sgemvParWorkAVX2
	}
	return max(1, min(Threads(), outs*k/parWork, outs/gemvTileMin))
}

// sgemvParallel computes a matrix-vector product (mode gemvRowMode or
// gemvColMode, with the arguments of gemvRow or gemvCol) on threads cores.
// The job holds the vector in a (stride lda), the matrix in b (stride ldb)
// and the output in c, which has outs elements (n).
func sgemvParallel(threads, mode int, trans bool, outs, k int, alpha float32, mat []float32, ld int, vec []float32, inc int, beta float32, c []float32, ldc int) {
	j := getSgemmJob()
	j.gemv, j.n, j.k = mode, outs, k
	j.directA = false
	j.transA, j.transB = trans, trans // the matrix's flag: B for rows, A for columns
	j.alpha, j.beta, j.a, j.b, j.c = alpha, beta, vec, mat, c
	j.lda, j.ldb, j.ldc = inc, ld, ldc
	j.done.Store(0)
	// Four ranges per thread for the dynamic queue, in whole cache lines.
	j.nt = max(gemvTileMin, roundUp(ceilDiv(outs, 4*threads), 16))
	j.total = int64(ceilDiv(outs, j.nt))
	j.execute(threads)
}

// gemvTile computes outputs i·nt… of a matrix-vector job.
func (j *sgemmJob) gemvTile(i int) {
	o0 := i * j.nt
	w := min(j.nt, j.n-o0)
	if j.gemv == gemvRowMode {
		// Columns o0… of op(B): in b, from column o0, or row o0 when
		// transposed.
		off := o0
		if j.transB {
			off = o0 * j.ldb
		}
		gemvRow(j.transB, w, j.k, j.alpha, j.a, j.lda, j.b[off:], j.ldb, j.beta, j.c[o0:o0+w])
		return
	}
	// Rows o0… of op(A): in the stored A, from row o0, or column o0 when
	// transposed.
	off := o0 * j.ldb
	if j.transA {
		off = o0
	}
	gemvCol(j.transA, w, j.k, j.alpha, j.b[off:], j.ldb, j.a, j.lda, j.beta, j.c[o0*j.ldc:], j.ldc)
}

// plan chooses the chunks, the tile sizes and the ticket count, and sizes
// the packing buffers.
func (j *sgemmJob) plan(threads int) {
	// k is chunked in multiples of the pass depth, but of at most
	// sgemmChunkKC:
	// each chunk is a step, steps wait for each other, and deeper AVX-512
	// passes (up to sgemmKC512) must not make the chunks of a deep product
	// shallower and more numerous (4 chunks of 768 for 2048×3072×768 ran
	// ~4% slower than 3 of 1024 in two passes each).
	kc := min(j.blk.kc, sgemmChunkKC)
	j.kChunk = min(j.k, max(kc, sgemmPackMax/max(j.m, j.n)/kc*kc))
	j.kChunks = ceilDiv(j.k, j.kChunk)
	// Row blocks are whole tiles of the micro-kernel in use: with 6-row
	// blocks (90, say) the AVX-512 path ran every block's last six rows
	// through its 6×32 kernel, about half as fast per FLOP as 12×32 (1.8%
	// of a small-preset training step's profile, mostly the weight
	// gradients' 256-row products).
	mr := sgemmMR
	if sgemmAVX512 {
		mr = sgemmMR512
	}
	j.mChunk, j.mChunks = chunk(j.m, mr, sgemmPackMax/j.kChunk)
	j.nChunk, j.nChunks = chunk(j.n, packBCols, sgemmPackMax/j.kChunk)

	j.mc, j.nt = tilesMR(j.mChunk, j.nChunk, threads, j.blk.mc, j.blk.nt, mr)

	steps := j.mChunks * j.nChunks * j.kChunks
	j.total = 0
	for s := range steps {
		st := j.step(s)
		j.total += int64(st.tilesM * st.tilesN)
	}
	j.bufA, j.packA = alignedFloats(roundUp(j.mChunk, sgemmMR) * j.kChunk)
	j.bufB, j.packB = alignedFloats(roundUp(j.nChunk, sgemmNR) * j.kChunk)
	j.stateA = resetStates(j.stateA, ceilDiv(j.mChunk, j.mc))
	j.stateB = resetStates(j.stateB, ceilDiv(j.nChunk, packBCols))
}

func resetStates(s []atomic.Int64, n int) []atomic.Int64 {
	if cap(s) < n {
		s = make([]atomic.Int64, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// Smallest tiles plan makes when it splits tiles for threads: below these a
// tile's packed B panels or A block are reused too few times.
const (
	sgemmMinMC = 24
	sgemmMinNT = packBCols
)

// tiles chooses the tile sizes for an m×n chunk. It starts from the
// cache-friendly mcDef×ntDef and, when threads share the work, splits
// (the dimension with the larger tiles first) until every thread has
// several tiles to draw from and their count is a multiple of threads, so
// that the dynamic queue can even out cores slowed down by other work
// without leaving one core alone with the last tile. The tiles of a
// dimension are of equal size, give or take the rounding to micro-panels.
func tiles(m, n, threads, mcDef, ntDef int) (mc, nt int) {
	return tilesMR(m, n, threads, mcDef, ntDef, sgemmMR)
}

// tilesMR is tiles with row tiles in multiples of mr rows (a multiple of
// sgemmMR that divides sgemmMinMC).
func tilesMR(m, n, threads, mcDef, ntDef, mr int) (mc, nt int) {
	mc = balanced(m, ceilDiv(m, mcDef), mr)
	nt = balanced(n, ceilDiv(n, ntDef), packBCols)
	if threads == 1 {
		return mc, nt
	}
	split := func() bool {
		nm, okM := finer(m, mc, mr, sgemmMinMC)
		nn, okN := finer(n, nt, packBCols, sgemmMinNT)
		switch {
		case okN && (nt >= mc || !okM):
			nt = nn
		case okM:
			mc = nm
		default:
			return false
		}
		return true
	}
	// Split until there are enough tiles, in a multiple of threads; if
	// that cannot be had, take the split that balances best.
	bestMC, bestNT, bestEff := mc, nt, 0.0
	for range 64 {
		c := ceilDiv(m, mc) * ceilDiv(n, nt)
		if c >= sgemmTilesPerThread*threads && c%threads == 0 {
			return mc, nt
		}
		if eff := float64(c) / float64(roundUp(c, threads)); eff > bestEff {
			bestMC, bestNT, bestEff = mc, nt, eff
		}
		if !split() {
			break
		}
	}
	return bestMC, bestNT
}

// balanced is the size of t tiles of equal size, rounded up to align,
// that cover n.
func balanced(n, t, align int) int { return roundUp(ceilDiv(n, t), align) }

// finer returns the balanced tile size that cuts n into the next larger
// number of tiles than size does, if it is at least minSize.
func finer(n, size, align, minSize int) (int, bool) {
	for t := ceilDiv(n, size) + 1; ; t++ {
		s := balanced(n, t, align)
		if s < minSize {
			return 0, false
		}
		if ceilDiv(n, s) > ceilDiv(n, size) {
			return s, true
		}
		if s == align {
			return 0, false
		}
	}
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

// alignedFloats returns a pooled buffer and n of its floats starting on a
// 64-byte boundary, so that no packed vector load straddles cache lines.
func alignedFloats(n int) (*[]float32, []float32) {
	const align = 64 / 4
	buf := GetFloats(n + align)
	b := *buf
	off := int(uintptr(unsafe.Pointer(&b[0])) % 64 / 4)
	if off != 0 {
		off = align - off
	}
	return buf, b[off : off+n]
}

// Item computes ticket t: a range of outputs of a matrix-vector product,
// or a tile of C.
func (j *sgemmJob) Item(_, t int) {
	if j.gemv != 0 {
		j.gemvTile(t)
		return
	}
	st := j.step(0)
	start := 0
	for size := st.tilesM * st.tilesN; t >= start+size; size = st.tilesM * st.tilesN {
		start += size
		st = j.step(st.s + 1)
	}
	// A new step overwrites the packed buffers: wait until the previous
	// one is finished. (Only products too large for the buffers have
	// several steps.) Tickets are claimed in order, so the previous step's
	// tiles are all being computed by now.
	if j.done.Load() < int64(start) {
		j.wait(func() bool { return j.done.Load() >= int64(start) })
	}
	var tmp [sgemmTmpLen]float32
	i := t - start
	j.computeTile(&st, i/st.tilesN, i%st.tilesN, &tmp)
	j.done.Add(1)
	j.notify()
}

// claim tries to take piece i of A (isB false) or B for packing in step s.
// It reports whether the caller must pack it and whether it is packed.
func (j *sgemmJob) claim(isB bool, i, s int) (mine, ready bool) {
	var state *atomic.Int64
	if isB {
		state = &j.stateB[i]
	} else {
		state = &j.stateA[i]
	}
	busy, done := int64(2*s+1), int64(2*s+2)
	v := state.Load()
	switch {
	case v == done:
		return false, true
	case v == busy:
		return false, false
	}
	return state.CompareAndSwap(v, busy), false
}

// pack packs piece i of A or B for step st and marks it packed.
func (j *sgemmJob) pack(st *sgemmStep, isB bool, i int) {
	if isB {
		c0 := i * packBCols
		packB(j.packB[c0*st.kk:], j.transB, j.b, j.ldb, st.p0, st.kk, st.j0+c0, min(packBCols, st.nn-c0))
		j.stateB[i].Store(int64(2*st.s + 2))
		j.notify()
		return
	}
	r0 := i * j.mc
	packA(j.packA[r0*st.kk:], j.transA, j.a, j.lda, st.i0+r0, min(j.mc, st.mm-r0), st.p0, st.kk)
	j.stateA[i].Store(int64(2*st.s + 2))
	j.notify()
}

// ensure returns once piece i of A or B is packed for step st, packing it
// if no one else is, and packing other pieces while someone else is.
func (j *sgemmJob) ensure(st *sgemmStep, isB bool, i int) {
	for {
		mine, ready := j.claim(isB, i, st.s)
		if mine {
			j.pack(st, isB, i)
			return
		}
		if ready {
			return
		}
		if !j.packAny(st) {
			j.wait(func() bool { _, ready := j.claim(isB, i, st.s); return ready })
			return
		}
	}
}

// wait returns once cond holds. Conditions change when another thread
// finishes packing a piece or computing a tile, which takes microseconds:
// poll for a while, then park until notify, so that a thread descheduled
// by the OS in the middle of a piece does not have its partner burn the
// other core meanwhile.
func (j *sgemmJob) wait(cond func() bool) {
	deadline := time.Now().Add(sgemmWaitSpin)
	for !cond() {
		if time.Now().Before(deadline) {
			runtime.Gosched()
			continue
		}
		// Counted before the check under the lock: a notifier that sees
		// no waiter made its change before this check, which then sees it.
		j.waiters.Add(1)
		j.mu.Lock()
		for !cond() {
			j.parked.Wait()
		}
		j.mu.Unlock()
		j.waiters.Add(-1)
	}
}

// notify wakes the threads parked in wait, after a change they may be
// waiting for.
func (j *sgemmJob) notify() {
	if j.waiters.Load() > 0 {
		j.mu.Lock()
		j.parked.Broadcast()
		j.mu.Unlock()
	}
}

// packAny packs one unclaimed piece of the step, if there is one left.
func (j *sgemmJob) packAny(st *sgemmStep) bool {
	for i := range ceilDiv(st.mm, j.mc) {
		if mine, _ := j.claim(false, i, st.s); mine {
			j.pack(st, false, i)
			return true
		}
	}
	if !st.packsB {
		return false
	}
	for i := range ceilDiv(st.nn, packBCols) {
		if mine, _ := j.claim(true, i, st.s); mine {
			j.pack(st, true, i)
			return true
		}
	}
	return false
}

// computeTile computes tile (ti, tj) of the step's part of C.
func (j *sgemmJob) computeTile(st *sgemmStep, ti, tj int, tmp *[sgemmTmpLen]float32) {
	if sgemmAVX512 {
		j.computeTile512(st, ti, tj, tmp)
		return
	}
	r0, c0 := ti*j.mc, tj*j.nt
	rows, cols := min(j.mc, st.mm-r0), min(j.nt, st.nn-c0)
	kk, ldc, alpha := st.kk, j.ldc, j.alpha
	j.ensure(st, false, ti)
	for pc := 0; pc < kk; pc += j.blk.kc {
		kc := min(j.blk.kc, kk-pc)
		beta := st.beta
		if pc > 0 {
			beta = 1
		}
		for jr := 0; jr < cols; jr += sgemmNR {
			if pc == 0 && st.packsB && (c0+jr)%packBCols == 0 {
				j.ensure(st, true, (c0+jr)/packBCols)
			}
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

// sgemmWaitSpin is how long a thread polls for a piece another is packing
// (or the end of the previous step) before parking: a piece takes a few
// microseconds to pack unless its packer lost its core.
const sgemmWaitSpin = 20 * time.Microsecond

// Pooled jobs: the packing buffers are in the buffer pool (bufpool.go),
// which keeps them across collections; the job itself is small.
var sgemmJobs FreeList[sgemmJob]

func getSgemmJob() *sgemmJob {
	j := sgemmJobs.Get()
	if j.parked == nil {
		j.parked = sync.NewCond(&j.mu)
	}
	return j
}

func putSgemmJob(j *sgemmJob) { sgemmJobs.Put(j) }
