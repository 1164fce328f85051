package kernels

import "unsafe"

// The bf16 GEMM. Its operands may each be bfloat16 or float32; float32
// operands are rounded to bfloat16 as they are read, so that every
// implementation computes the same product of bf16 values, accumulated
// and returned in float32.
//
// Two paths, chosen through the registry family "gemmbf16":
//
//   - avx512bf16 (CPUs with AVX512_BF16): op(A) and op(B) are packed as for
//     the float32 GEMM (6-row A micro-panels, 16-column B micro-panels), but
//     a packed element is a pair of adjacent k, two bf16 in one 32-bit word
//     (the even k in the low half; an odd K is padded with a zero). The
//     micro-kernel (_asm/bf16) multiplies a B word vector by a broadcast A
//     word with VDPBF16PS, two multiply-adds per float32 lane, into a 12×32
//     tile of accumulators.
//   - generic (every other CPU and build): blocks of op(A) and op(B) are
//     converted to float32 (rounded through bf16 when they are float32) and
//     multiplied by Sgemm, i.e. by the best float32 micro-kernel of the
//     level in force.
//
// Large products are cut into chunks of k (and of n) so that the packed or
// converted blocks stay within a bound (bf16Blocking.packMax).

// BF16Mat is an operand of GemmBF16: a row-major matrix with row stride Ld,
// stored as bfloat16 (BF16) or, when BF16 is nil, as float32 (F32), which
// GemmBF16 rounds to bfloat16 as it reads it.
type BF16Mat struct {
	BF16 []uint16
	F32  []float32
	Ld   int
}

func (x BF16Mat) len() int {
	if x.BF16 != nil {
		return len(x.BF16)
	}
	return len(x.F32)
}

// rowBF16 returns elements j0…j0+n of stored row i as bfloat16: the
// stored slice, or the float32s rounded into buf (len(buf) ≥ n).
func (x BF16Mat) rowBF16(i, j0, n int, buf []uint16) []uint16 {
	if x.BF16 != nil {
		return x.BF16[i*x.Ld+j0:][:n]
	}
	ToBF16(buf[:n], x.F32[i*x.Ld+j0:][:n])
	return buf[:n]
}

// rowF32 writes elements j0…j0+n of stored row i, as float32 values of
// bfloat16 precision, into dst.
func (x BF16Mat) rowF32(i, j0 int, dst []float32) {
	if x.BF16 != nil {
		FromBF16(dst, x.BF16[i*x.Ld+j0:][:len(dst)])
		return
	}
	RoundBF16Slice(dst, x.F32[i*x.Ld+j0:][:len(dst)])
}

// GemmBF16 computes C = alpha·op(A)·op(B) + beta·C with op(A) m×k and op(B)
// k×n bfloat16 matrices (float32 operands are first rounded to bfloat16)
// and C an m×n float32 matrix with row stride ldc; transA/transB select
// Aᵀ/Bᵀ. Products are accumulated in float32. The conventions are Sgemm's:
// beta == 0 overwrites C without reading it, alpha == 0 or k == 0 only
// scales C, and it panics on negative sizes, leading dimensions smaller
// than their matrix's row width and slices too short for their matrix. It is
// safe to call from many goroutines at once; large products run on
// Threads() cores.
func GemmBF16(transA, transB bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, c []float32, ldc int) {
	checkGemmBF16(transA, transB, m, n, k, a, b, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if alpha == 0 || k == 0 {
		scaleMatrix(m, n, beta, c, ldc)
		return
	}
	if m <= bf16GemvRows && transB {
		gemvBF16(transA, m, n, k, alpha, a, b, beta, c, ldc)
		return
	}
	gemmBF16(gemmBF16Asm, bf16DefaultBlocking, transA, transB, m, n, k, alpha, a, b, beta, c, ldc)
}

// GemmBF16Bias computes C = op(A)·op(B) + bias, the n values of bias added
// to every row; the old contents of C are not read. The sums start from the
// bias (the kernels' accumulators are seeded with it, so the bias costs no
// pass over C), except where the paired kernels do not run: there C is
// filled with the bias and GemmBF16 adds the product onto it. It panics as
// GemmBF16 does, and if bias is shorter than n.
func GemmBF16Bias(transA, transB bool, m, n, k int, a, b BF16Mat, bias []float32, c []float32, ldc int) {
	checkGemmBF16(transA, transB, m, n, k, a, b, c, ldc)
	if len(bias) < n {
		panic("kernels: GemmBF16Bias: bias shorter than n")
	}
	if m == 0 || n == 0 {
		return
	}
	if !gemmBF16Asm || k == 0 || (m <= bf16GemvRows && transB) {
		for r := range m {
			copy(c[r*ldc:r*ldc+n], bias[:n])
		}
		GemmBF16(transA, transB, m, n, k, 1, a, b, 1, c, ldc)
		return
	}
	gemmBF16Paired(bf16DefaultBlocking, transA, transB, m, n, k, 1, a, b, 0, bias[:n], c, ldc)
}

// bf16GemvRows is the most rows of op(A) that GemmBF16 multiplies by dot
// products instead of packing: a decoding step's one row per sequence
// reads each row of a transposed B (a torch.nn.Linear weight, [out, in])
// once, where the packed path would copy all of B and run its 12-row
// kernel on one row. (One decoding step at SmolLM2-135M's shapes:
// BenchmarkBaseGenerate in lora.)
const bf16GemvRows = 4

// bf16DotWork is the least n·k worth splitting a gemv over threads.
const bf16DotWork = 1 << 18

// gemvBF16 computes C = alpha·op(A)·Bᵀ + beta·C for a few rows of op(A):
// each element of C is the dot product of a row of op(A), rounded to
// bfloat16 once, with a stored row of B.
func gemvBF16(transA bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, c []float32, ldc int) {
	bufp := GetFloats(m * ceilDiv(k, 2))
	words := *bufp
	xs := unsafe.Slice((*uint16)(unsafe.Pointer(&words[:1][0])), 2*len(words))
	for r := range m {
		x := xs[r*k : (r+1)*k]
		if !transA {
			copy(x, a.rowBF16(r, 0, k, x))
			continue
		}
		for p := range k { // op(A)[r][p] = a[p·lda + r]
			if a.BF16 != nil {
				x[p] = a.BF16[p*a.Ld+r]
			} else {
				x[p] = Float32ToBF16(a.F32[p*a.Ld+r])
			}
		}
	}
	threads := max(1, min(Threads(), n*k/bf16DotWork, n/16))
	per := ceilDiv(n, threads)
	For(threads, ceilDiv(n, per), ItemFunc(func(_, i int) {
		var buf [bf16Seg]uint16
		var wbuf []uint16
		if b.BF16 == nil && k > len(buf) {
			wbuf = make([]uint16, k)
		} else {
			wbuf = buf[:]
		}
		for o := i * per; o < min(n, (i+1)*per); o++ {
			w := b.rowBF16(o, 0, k, wbuf)
			for r := range m {
				v := alpha * dotBF16(xs[r*k:(r+1)*k], w)
				if beta != 0 {
					v += beta * c[r*ldc+o]
				}
				c[r*ldc+o] = v
			}
		}
	}))
	PutFloats(bufp)
}

// dotBF16 returns the float32 sum of x[i]·y[i] over bfloat16 vectors of
// equal length.
func dotBF16(x, y []uint16) float32 {
	s, n := dotBF16Asm(x, y)
	if n == len(x) {
		return s
	}
	// The rest (all of it without the VDPBF16PS routine) in float32
	// blocks, through the float32 dot product.
	var fx, fy [bf16Seg]float32
	for i := n; i < len(x); i += bf16Seg {
		e := min(len(x), i+bf16Seg)
		FromBF16(fx[:e-i], x[i:e])
		FromBF16(fy[:e-i], y[i:e])
		s += dot(fx[:e-i], fy[:e-i])
	}
	return s
}

// checkGemmBF16 panics as checkSgemm does.
func checkGemmBF16(transA, transB bool, m, n, k int, a, b BF16Mat, c []float32, ldc int) {
	switch {
	case m < 0:
		panic("kernels: GemmBF16: m < 0")
	case n < 0:
		panic("kernels: GemmBF16: n < 0")
	case k < 0:
		panic("kernels: GemmBF16: k < 0")
	}
	if (transA && a.Ld < max(1, m)) || (!transA && a.Ld < max(1, k)) {
		panic("kernels: GemmBF16: bad leading dimension of A")
	}
	if (transB && b.Ld < max(1, k)) || (!transB && b.Ld < max(1, n)) {
		panic("kernels: GemmBF16: bad leading dimension of B")
	}
	if ldc < max(1, n) {
		panic("kernels: GemmBF16: bad leading dimension of C")
	}
	if m == 0 || n == 0 {
		return
	}
	if k > 0 && ((transA && a.len() < (k-1)*a.Ld+m) || (!transA && a.len() < (m-1)*a.Ld+k)) {
		panic("kernels: GemmBF16: insufficient length of a")
	}
	if k > 0 && ((transB && b.len() < (n-1)*b.Ld+k) || (!transB && b.len() < (k-1)*b.Ld+n)) {
		panic("kernels: GemmBF16: insufficient length of b")
	}
	if len(c) < (m-1)*ldc+n {
		panic("kernels: GemmBF16: insufficient length of c")
	}
}

// bf16Blocking is the blocking of the paired path: the k pairs of one
// kernel call (kp), the rows (mc) and columns (nt) of a tile, and the bound
// on each packed operand chunk, in 32-bit words (packMax).
type bf16Blocking struct{ kp, mc, nt, packMax int }

// bf16DefaultBlocking: a kernel call covers 256 k pairs (512 k), so a B
// micro-panel block (16 columns × 256 words, 16 KiB) stays in L1 as in the
// float32 kernel at KC 256, while C is loaded and stored half as often as
// at 128 pairs. Tiles are those of the float32 AVX-512 path. From
// BenchmarkGemmBF16Blocking -cpu 1 (GFLOP per CPU second, medians of 3, one
// parameter changed at a time from kp256,mc96,nt512; the shared machine's
// load average was above 9, so only differences beyond ~5% mean anything):
//
//	               kp64  kp128 kp192 kp256 kp384 kp512 | mc48  mc72  mc144 mc192 | nt256 nt1024
//	1024³          146.4 151.0 149.1 166.9 153.0 155.5 | 162.8 164.2 169.6 170.1 | 160.4 172.1
//	2048×768×3072  150.1 159.6 168.7 182.7 179.5 178.3 | 169.0 166.8 171.8 175.3 | 168.2 163.8
//
// kp256 was best on both shapes; no mc or nt beat the default on both.
// A re-run after the vector packing, 1024³ only, -count 8 at a load
// average of 20–28 (benchstat ± is the 95% interval):
//
//	kp256,nt512 154.3 ± 14% | kp512,nt512 163.8 ± 6% (p=0.20) | kp256,nt256 168.8 ± 11% (p=0.11)
//	kp256 174.0 ± 11% | kp128 167.3 ± 9% (p=0.59) | kp512 177.3 ± 7% (p=0.39) (-count 6)
//
// No difference is significant on one core. On both cores (the
// benchmark's -cpu 2), nt256 against nt512 in two runs of -count 10:
//
//	1024³          +1.7% (p=0.52)   +10.3% (p=0.004)
//	2048×768×3072  +8.8% (p=0.000)  +2.2% (p=0.53)
//
// never worse: a 96×512 tile's C (192 KiB), packed A (96 KiB) and the B
// panels of one kp pass (512 KiB) crowd the 1 MiB L2 that at nt256 they
// fill by half, so nt is 256; kp and mc stay. The kernel on a
// tile's worth of panels (BenchmarkBF16KernelTile) runs at 200–210
// GFLOP/cpu-s under the same load, so what the product loses beyond that
// is packing and the passes of C and packed A through the caches.
// Chunks of the packed operands stay within 8 MiB each, as Sgemm's.
var bf16DefaultBlocking = bf16Blocking{kp: 256, mc: sgemmMC512, nt: 256, packMax: sgemmPackMax}

// bf16Job is one GemmBF16 call and what its threads share.
type bf16Job struct {
	paired         bool
	blk            bf16Blocking
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b           BF16Mat
	bias           []float32 // added to every row of C by the first k pass, or nil
	c              []float32
	ldc            int

	// The chunk being computed: k from p0 (kk deep, kp pairs), columns
	// from j0 (nn wide), and its beta.
	p0, kk, kp, j0, nn int
	cbeta              float32

	pack       bool // the loop packs (true) or computes tiles
	packB      bool // the pack loop packs B (A only for its first n chunk)
	aBlocks    int  // A row blocks (of mc rows) in the pack loop
	mc, nt     int
	tilesN     int
	bufA, bufB *[]float32
	wa, wb     []uint32 // packed pairs (views of bufA, bufB)
}

var bf16Jobs FreeList[bf16Job]

// gemmBF16 runs a product (alpha ≠ 0, k > 0, m, n > 0) on the paired path
// or the float32 one, with the given blocking of the paired path.
func gemmBF16(paired bool, blk bf16Blocking, transA, transB bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, c []float32, ldc int) {
	if !paired {
		gemmBF16F32(blk.packMax, transA, transB, m, n, k, alpha, a, b, beta, c, ldc)
		return
	}
	gemmBF16Paired(blk, transA, transB, m, n, k, alpha, a, b, beta, nil, c, ldc)
}

// gemmBF16Paired runs a product on the paired path; a non-nil bias (n
// values, with beta 0) is added to every row of C.
func gemmBF16Paired(blk bf16Blocking, transA, transB bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, bias, c []float32, ldc int) {
	j := bf16Jobs.Get()
	*j = bf16Job{paired: true, blk: blk, transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, beta: beta, a: a, b: b, bias: bias, c: c, ldc: ldc}
	threads := Threads()
	if work := m * n * k; work < sgemmParWorkAVX2*threads {
		threads = max(1, min(threads, work/sgemmParWorkAVX2))
	}
	// Chunks: k in multiples of 2·kp (the A block, m rows × the chunk's
	// pairs, within packMax if m allows), then n so that the B block
	// fits as well.
	step := 2 * blk.kp
	kChunk := min(roundUp(k, 2), max(step, blk.packMax/max(m, 1)*2/step*step))
	nChunk, _ := chunk(n, packBCols, blk.packMax/ceilDiv(kChunk, 2))
	for p0 := 0; p0 < k; p0 += kChunk {
		j.p0, j.kk = p0, min(kChunk, k-p0)
		j.kp = ceilDiv(j.kk, 2)
		j.cbeta = beta
		if p0 > 0 {
			j.cbeta = 1
		}
		for j0 := 0; j0 < n; j0 += nChunk {
			j.j0, j.nn = j0, min(nChunk, n-j0)
			j.runChunk(threads, j0 == 0)
		}
	}
	PutFloats(j.bufA)
	PutFloats(j.bufB)
	*j = bf16Job{}
	bf16Jobs.Put(j)
}

// runChunk packs (B, and A if packA) and computes one chunk.
func (j *bf16Job) runChunk(threads int, packA bool) {
	j.mc, j.nt = tiles(j.m, j.nn, threads, j.blk.mc, j.blk.nt)
	if packA {
		j.wa = j.words(&j.bufA, roundUp(j.m, sgemmMR)*j.kp)
	}
	j.wb = j.words(&j.bufB, roundUp(j.nn, sgemmNR)*j.kp)
	j.pack, j.packB = true, true
	j.aBlocks = 0
	if packA {
		j.aBlocks = ceilDiv(j.m, j.mc)
	}
	For(threads, j.aBlocks+ceilDiv(j.nn, packBCols), j)
	j.pack = false
	j.tilesN = ceilDiv(j.nn, j.nt)
	For(threads, ceilDiv(j.m, j.mc)*j.tilesN, j)
}

// words returns n 64-byte aligned 32-bit words of the pooled buffer *buf,
// (re)allocating it when it is too small.
func (j *bf16Job) words(buf **[]float32, n int) []uint32 {
	if *buf != nil && cap(**buf) < n+16 {
		PutFloats(*buf)
		*buf = nil
	}
	var f []float32
	if *buf == nil {
		*buf, f = alignedFloats(n)
	} else {
		b := **buf
		off := int(uintptr(unsafe.Pointer(&b[:1][0])) % 64 / 4)
		if off != 0 {
			off = 16 - off
		}
		f = b[off : off+n]
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&f[0])), n)
}

// Item packs a block of A or B, or computes a tile of C.
func (j *bf16Job) Item(_, i int) {
	switch {
	case !j.pack:
		var tmp [sgemmTmpLen]float32
		j.computeTile(i/j.tilesN, i%j.tilesN, &tmp)
	case i < j.aBlocks:
		r0 := i * j.mc
		packAPairs(j.wa[r0*j.kp:], j.a, j.transA, r0, min(j.mc, j.m-r0), j.p0, j.kk)
	default:
		c0 := (i - j.aBlocks) * packBCols
		packBPairs(j.wb[c0*j.kp:], j.b, j.transB, j.p0, j.kk, j.j0+c0, min(packBCols, j.nn-c0))
	}
}

// computeTile computes tile (ti, tj) of the chunk, as computeTile512 does
// for float32.
func (j *bf16Job) computeTile(ti, tj int, tmp *[sgemmTmpLen]float32) {
	r0, c0 := ti*j.mc, tj*j.nt
	rows, cols := min(j.mc, j.m-r0), min(j.nt, j.nn-c0)
	kp, ldc, alpha := j.kp, j.ldc, j.alpha
	aStride, bStride := sgemmMR*kp, sgemmNR*kp
	for pc := 0; pc < kp; pc += j.blk.kp {
		kc := min(j.blk.kp, kp-pc)
		beta := j.cbeta
		if pc > 0 {
			beta = 1
		}
		for jr := 0; jr < cols; jr += sgemmNR512 {
			nr := min(sgemmNR512, cols-jr)
			bPanels := ceilDiv(nr, sgemmNR)
			bp := j.wb[(c0+jr)*kp+pc*sgemmNR:]
			// GemmBF16Bias: the first pass starts its sums from the
			// bias, zero-padded past the last column.
			var bias []float32
			var biasPad [sgemmNR512]float32
			if j.bias != nil && j.p0 == 0 && pc == 0 {
				if bias = j.bias[j.j0+c0+jr:]; len(bias) < bPanels*sgemmNR {
					copy(biasPad[:], bias)
					bias = biasPad[:]
				}
			}
			for ir := 0; ir < rows; ir += sgemmMR512 {
				mr := min(sgemmMR512, rows-ir)
				aPanels := ceilDiv(mr, sgemmMR)
				ap := j.wa[(r0+ir)*kp+pc*sgemmMR:]
				off := (r0+ir)*ldc + j.j0 + c0 + jr
				if mr == aPanels*sgemmMR && nr == bPanels*sgemmNR {
					bf16Kernel(aPanels, bPanels, kc, ap, aStride, bp, bStride, j.c[off:], ldc, alpha, beta, bias)
					continue
				}
				w := bPanels * sgemmNR
				bf16Kernel(aPanels, bPanels, kc, ap, aStride, bp, bStride, tmp[:], w, 1, 0, bias)
				for r := range mr {
					crow := j.c[off+r*ldc : off+r*ldc+nr]
					trow := tmp[r*w : r*w+nr]
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

// pair joins the bf16 of an even k (low half) and the next k (high half).
func pair(lo, hi uint16) uint32 { return uint32(lo) | uint32(hi)<<16 }

// bf16Seg is the length of the row segments the packers convert at a time
// (even, so that no k pair straddles two segments, and a multiple of 6, so
// that no A micro-panel does).
const bf16Seg = 264

// bf16PairSeg is how many k pairs of six rows of A are converted at a time
// (into a 3 KiB buffer) before the float32 packer moves them as words.
const bf16PairSeg = 128

// f32s views 32-bit words (k pairs) as float32s, so that the float32
// packing routines (sgemm_pack.go), which only move bits, pack them.
func f32s(w []uint32) []float32 {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&w[0])), len(w))
}

// pairs returns x's storage as 32-bit words, each the k pair of two
// adjacent stored elements, viewed as float32s (see f32s); ok only when x
// is stored as bfloat16 with an even Ld from a 4-byte aligned start, so
// that every row starts on a word.
func (x BF16Mat) pairs() (w []float32, ok bool) {
	if x.BF16 == nil || x.Ld%2 != 0 || len(x.BF16) < 2 || uintptr(unsafe.Pointer(&x.BF16[0]))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&x.BF16[0])), len(x.BF16)/2), true
}

// at returns stored element (i, j) as bfloat16.
func (x BF16Mat) at(i, j int) uint16 {
	if x.BF16 != nil {
		return x.BF16[i*x.Ld+j]
	}
	return Float32ToBF16(x.F32[i*x.Ld+j])
}

// pairRows writes the k pairs of stored rows p and p+1 (p alone, the high
// halves zero, when !next) at columns j…j+n to dst, in groups of 16 at the
// given stride: column j+c goes to dst[(c/16)·stride + c%16]. Float32 rows
// are rounded and paired in one pass.
func (x BF16Mat) pairRows(dst []uint32, stride, p int, next bool, j, n int) {
	done := 0
	if next {
		if x.BF16 != nil {
			done = interleaveAsm(dst, stride, x.BF16[p*x.Ld+j:][:n], x.BF16[(p+1)*x.Ld+j:][:n])
		} else {
			done = cvtPairsAsm(dst, stride, x.F32[p*x.Ld+j:][:n], x.F32[(p+1)*x.Ld+j:][:n])
		}
	}
	for c := done; c < n; c++ {
		var hi uint16
		if next {
			hi = x.at(p+1, j+c)
		}
		dst[(c/16)*stride+c%16] = pair(x.at(p, j+c), hi)
	}
}

// packAPairs packs op(A)[i0:i0+rows, p0:p0+kk] into micro-panels of 6 rows
// of k pairs: word (r, pp) of panel q is at q·6·kp + pp·6 + r, kp =
// ceil(kk/2). Rows past the edge and the odd k's partner are zero. The
// word moves are the float32 packer's (vector code where there is some).
func packAPairs(dst []uint32, a BF16Mat, transA bool, i0, rows, p0, kk int) {
	kp := ceilDiv(kk, 2)
	if transA {
		packAPairsT(dst, a, i0, rows, p0, kk)
		return
	}
	if w, ok := a.pairs(); ok && p0%2 == 0 && kk%2 == 0 {
		// Row r of op(A) is stored as words already.
		packA(f32s(dst), false, w, a.Ld/2, i0, rows, p0/2, kp)
		return
	}
	// Otherwise six rows at a time: float32 ones by the vector routine,
	// which rounds and lays out all their full pairs (an odd last k is
	// added here); the rest are converted (rounded, or copied to a word
	// boundary) bf16PairSeg pairs at a time and packed from there.
	var tmp [sgemmMR * bf16PairSeg]uint32
	for q := 0; q*sgemmMR < rows; q++ {
		r := min(sgemmMR, rows-q*sgemmMR)
		d, i := dst[q*sgemmMR*kp:], i0+q*sgemmMR
		if a.BF16 == nil && r == sgemmMR && cvtA6Asm(d, a.F32[i*a.Ld+p0:], a.Ld, kk/2) {
			if kk%2 == 1 {
				for rr := range sgemmMR {
					d[(kp-1)*sgemmMR+rr] = uint32(Float32ToBF16(a.F32[(i+rr)*a.Ld+p0+kk-1]))
				}
			}
			continue
		}
		for s := 0; s < kp; s += bf16PairSeg {
			sw := a.rowPairs(tmp[:], i0+q*sgemmMR, r, p0, kk, s)
			packA(f32s(dst[q*sgemmMR*kp+s*sgemmMR:]), false, f32s(tmp[:]), sw, 0, r, 0, sw)
		}
	}
}

// rowPairs writes k pairs s… (at most bf16PairSeg of them, sw, which it
// returns) of stored rows i…i+r, elements p0…p0+kk, as words to dst: row
// rr at dst[rr·sw:], rounded (or copied to a word boundary), an odd last
// element paired with zero. len(dst) ≥ r·bf16PairSeg.
func (x BF16Mat) rowPairs(dst []uint32, i, r, p0, kk, s int) (sw int) {
	sw = min(bf16PairSeg, ceilDiv(kk, 2)-s)
	ke := min(2*sw, kk-2*s) // 2·sw, or one less at an odd end
	h := unsafe.Slice((*uint16)(unsafe.Pointer(&dst[0])), 2*len(dst))
	for rr := range r {
		row := h[rr*2*sw : (rr+1)*2*sw]
		if src := x.rowBF16(i+rr, p0+2*s, ke, row); x.BF16 != nil {
			copy(row, src)
		}
		if ke < len(row) {
			row[ke] = 0
		}
	}
	return sw
}

// packAPairsT is packAPairs for a transposed A: op(A)[i][p] = a[p·lda +
// i], so the k pair pp of rows i… joins two stored rows. For float32 rows
// the vector routine rounds the full pairs and deals their words six to
// each panel; otherwise (bf16 rows, an odd last k, no vector routine) the
// words are made for up to bf16Seg rows at a time and dealt from there.
func packAPairsT(dst []uint32, a BF16Mat, i0, rows, p0, kk int) {
	kp := ceilDiv(kk, 2)
	start := 0
	if a.BF16 == nil && cvtPairBlockAsm(sgemmMR, dst, sgemmMR*kp, a.F32[p0*a.Ld+i0:], a.Ld, rows, kk/2) {
		start = kk / 2
	}
	var w [bf16Seg]uint32
	for pp := start; pp < kp; pp++ {
		p, next := p0+2*pp, 2*pp+1 < kk
		for s := 0; s < rows; s += bf16Seg { // bf16Seg is a multiple of 6
			n := min(bf16Seg, rows-s)
			a.pairRows(w[:], sgemmNR, p, next, i0+s, n)
			for q := 0; q*sgemmMR < n; q++ {
				dd := (*[sgemmMR]uint32)(dst[((s/sgemmMR)+q)*sgemmMR*kp+pp*sgemmMR:])
				if r := n - q*sgemmMR; r < sgemmMR {
					*dd = [sgemmMR]uint32{}
					copy(dd[:r], w[q*sgemmMR:n])
					continue
				}
				*dd = *(*[sgemmMR]uint32)(w[q*sgemmMR:])
			}
		}
	}
}

// packBPairs packs op(B)[p0:p0+kk, j0:j0+cols] into micro-panels of 16
// columns of k pairs: word (pp, c) of panel q is at q·16·kp + pp·16 + c.
// Columns past the edge and the odd k's partner are zero.
func packBPairs(dst []uint32, b BF16Mat, transB bool, p0, kk, j0, cols int) {
	kp := ceilDiv(kk, 2)
	if !transB {
		// Rows p and p+1 of op(B) are contiguous: pair them, dealing 16
		// columns to each panel; float32 rows by the vector routine for
		// all full pairs at once, which pads the last panel with zeros.
		start := 0
		if b.BF16 == nil && cvtPairBlockAsm(sgemmNR, dst, sgemmNR*kp, b.F32[p0*b.Ld+j0:], b.Ld, cols, kk/2) {
			start = kk / 2
		}
		if cols%sgemmNR != 0 {
			q := cols / sgemmNR
			clear(dst[q*sgemmNR*kp+start*sgemmNR : (q+1)*sgemmNR*kp])
		}
		for pp := start; pp < kp; pp++ {
			b.pairRows(dst[pp*sgemmNR:], sgemmNR*kp, p0+2*pp, 2*pp+1 < kk, j0, cols)
		}
		return
	}
	// op(B)[p][j] = b[j·ldb + p]: column j of op(B) is a stored row, whose
	// pairs are words.
	if w, ok := b.pairs(); ok && p0%2 == 0 && kk%2 == 0 {
		packB(f32s(dst), true, w, b.Ld/2, p0/2, kp, j0, cols)
		return
	}
	// Otherwise (a float32 B: the master weight of a mixed-precision
	// input gradient) sixteen stored rows at a time are converted,
	// bf16PairSeg pairs at a time, and transposed as words by the float32
	// packer.
	var tmp [sgemmNR * bf16PairSeg]uint32
	for q := 0; q*sgemmNR < cols; q++ {
		c := min(sgemmNR, cols-q*sgemmNR)
		for s := 0; s < kp; s += bf16PairSeg {
			sw := b.rowPairs(tmp[:], j0+q*sgemmNR, c, p0, kk, s)
			packB(f32s(dst[q*sgemmNR*kp+s*sgemmNR:]), true, f32s(tmp[:]), sw, 0, sw, 0, c)
		}
	}
}

// bf16KernelGo is the portable form of the paired kernels' contract (see
// bf16Kernel): each float32 lane adds the products of both halves of its
// pair, as VDPBF16PS does.
func bf16KernelGo(aPanels, bPanels, kp int, a []uint32, aStride int, b []uint32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	for i := range aPanels {
		for h := range bPanels {
			ap, bp := a[i*aStride:], b[h*bStride:]
			var acc [sgemmMR * sgemmNR]float32
			if bias != nil {
				for r := range sgemmMR {
					copy(acc[r*sgemmNR:(r+1)*sgemmNR], bias[h*sgemmNR:(h+1)*sgemmNR])
				}
			}
			for pp := range kp {
				bw := bp[pp*sgemmNR:][:sgemmNR]
				for r := range sgemmMR {
					aw := ap[pp*sgemmMR+r]
					alo, ahi := BF16ToFloat32(uint16(aw)), BF16ToFloat32(uint16(aw>>16))
					row := acc[r*sgemmNR:][:sgemmNR]
					for x, w := range bw {
						row[x] += alo*BF16ToFloat32(uint16(w)) + ahi*BF16ToFloat32(uint16(w>>16))
					}
				}
			}
			cc := c[i*sgemmMR*ldc+h*sgemmNR:]
			for r := range sgemmMR {
				crow := cc[r*ldc:][:sgemmNR]
				for x, v := range acc[r*sgemmNR:][:sgemmNR] {
					if beta == 0 {
						crow[x] = alpha * v
					} else {
						crow[x] = alpha*v + beta*crow[x]
					}
				}
			}
		}
	}
}

// gemmBF16F32 is the float32 path: chunks of op(A) and op(B) are widened
// (or rounded) to bfloat16-precision float32 in pooled buffers and
// multiplied by Sgemm.
func gemmBF16F32(packMax int, transA, transB bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, c []float32, ldc int) {
	kChunk := min(k, max(256, packMax/max(m, 1)))
	nChunk := min(n, max(packBCols, packMax/kChunk))
	bufA := GetFloats(m * min(kChunk, k))
	bufB := GetFloats(min(kChunk, k) * min(nChunk, n))
	for p0 := 0; p0 < k; p0 += kChunk {
		kk := min(kChunk, k-p0)
		fa := (*bufA)[:m*kk]
		opToF32(fa, a, transA, 0, m, p0, kk)
		cb := beta
		if p0 > 0 {
			cb = 1
		}
		for j0 := 0; j0 < n; j0 += nChunk {
			nn := min(nChunk, n-j0)
			fb := (*bufB)[:kk*nn]
			opToF32(fb, b, transB, p0, kk, j0, nn)
			Sgemm(false, false, m, nn, kk, alpha, fa, kk, fb, nn, cb, c[j0:], ldc)
		}
	}
	PutFloats(bufA)
	PutFloats(bufB)
}

// opToF32 writes op(X)[r0:r0+rows, c0:c0+cols] densely (row stride cols)
// into dst as bfloat16-precision float32s.
func opToF32(dst []float32, x BF16Mat, trans bool, r0, rows, c0, cols int) {
	if !trans {
		for r := range rows {
			x.rowF32(r0+r, c0, dst[r*cols:][:cols])
		}
		return
	}
	// op(X)[r][c] = x[c·ld + r]: read stored rows, scatter columns.
	var buf [bf16Seg]float32
	for c := range cols {
		for s := 0; s < rows; s += bf16Seg {
			n := min(bf16Seg, rows-s)
			x.rowF32(c0+c, r0+s, buf[:n])
			for i, v := range buf[:n] {
				dst[(s+i)*cols+c] = v
			}
		}
	}
}
