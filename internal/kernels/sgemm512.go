package kernels

// The AVX-512 path of the packed SGEMM. It packs exactly as the AVX2 path
// does (6-row A micro-panels, 16-column B micro-panels; a B panel's k step
// is one ZMM register), and computes C in 12×32 tiles, two A panels by two
// B panels, with 24 ZMM accumulators (_asm/sgemm512). Tile edges that are a
// multiple of 6 rows and 16 columns but not of 12 and 32 use the 6- and
// 16-wide variants of the kernel; ragged ones go through a buffer.

// Blocking of the AVX-512 path, from BenchmarkSgemmBlocking -cpu 1 (one
// core of the shared 2-core Zen 4 EPYC, GFLOP per CPU second, medians of 5;
// one parameter changed at a time from kc256,mc96,nt512):
//
//	                 kc128 kc192 kc256 kc320 kc384 kc512 | mc48 mc72 mc144 mc192 | nt256 nt1024
//	1024³             93.9  99.4  90.4 102.4 100.7 102.1 | 101.4 103.4 97.1 94.7 |  95.6 102.0
//	2048×768×3072     92.4  95.7  98.6  92.0 104.3 100.7 |  96.9  96.7 95.8 94.6 |  95.8  95.1
//
// Runs vary by ±5% with the machine's other load, so only KC shows a trend
// that held in three sweeps: a deeper KC halves the passes over C (each
// pass loads and stores the whole of C, which lives in no cache at these
// sizes), and kc512 was at or above kc256 every time (+4% and +7% geomean;
// in four alternating runs 95.6 vs 93.8 and 96.1 vs 94.6). MC and NT
// stay at the AVX2 path's values, which no sweep beat consistently.
//
// KC is the deepest pass: a chunk of depth kk is cut into the fewest passes
// of at most KC, of equal depth (sgemmPassDepth), so k = 768 is one pass
// instead of 512 + 256, and k = 1024 still two of 512. The sweep behind 768
// (sgemmPackedBlocking on both cores, GFLOP per CPU second, medians, the
// machine loaded by other work; kc512 ran 512 + 256 for k = 768):
//
//	                     kc256 kc384 kc512 kc768 kc1024
//	1024³ (3 runs)        86.6     -  91.9  88.8*  92.4
//	2048×768×768 (4)         -  93.4  94.4  96.9      -
//	2048×768×3072 (3, 4)  87.3  93.5  92.1  96.4   94.2
//
// (* 768 + 256: the sweep predates the equal split, which makes it 2×512)
// and BenchmarkSgemm, before/after binaries interleaved (medians of 4, 4
// and 8 runs): 2048×768×3072 92.2→97.7, 91.8→90.3, 90.5→90.9;
// 2048×768×768 94.8→97.7, 90.4→93.7, 93.0→94.8. A pass of 1024 for
// k = 1024 measured the same as two of 512, so KC stops at 768.
const (
	sgemmKC512 = 768
	// sgemmChunkKC caps the depth unit that k chunks are multiples of
	// (plan), so deeper passes do not make a deep product's chunks more
	// numerous.
	sgemmChunkKC = 512
	sgemmMC512   = 96
	sgemmNT512   = 512

	sgemmMR512 = 2 * sgemmMR // rows of the main AVX-512 tile
	sgemmNR512 = 2 * sgemmNR // columns of the main AVX-512 tile

	// sgemmTmpLen is the size of the edge buffer of either path.
	sgemmTmpLen = sgemmMR512 * sgemmNR512
)

// sgemmPassDepth returns the depth of each pass over a tile of C for a
// chunk of depth kk and passes of at most kcMax: the fewest passes, of
// equal depth rounded up to 8 (whole cache lines of a packed A panel), so
// that no pass is a short remainder that loads and stores C for little
// work.
func sgemmPassDepth(kk, kcMax int) int {
	if kk <= kcMax {
		return kk
	}
	return min(kcMax, roundUp(ceilDiv(kk, ceilDiv(kk, kcMax)), 8))
}

// computeTile512 is computeTile for the AVX-512 micro-kernels.
func (j *sgemmJob) computeTile512(st *sgemmStep, ti, tj int, tmp *[sgemmTmpLen]float32) {
	r0, c0 := ti*j.mc, tj*j.nt
	rows, cols := min(j.mc, st.mm-r0), min(j.nt, st.nn-c0)
	kk, ldc, alpha := st.kk, j.ldc, j.alpha
	aStride, bStride := sgemmMR*kk, sgemmNR*kk // from one panel to the next
	// A tile of whole 12-row groups of an A read in place packs nothing.
	direct := j.directA && rows%sgemmMR512 == 0
	if !direct {
		j.ensure(st, false, ti)
	}
	step := sgemmPassDepth(kk, j.blk.kc)
	for pc := 0; pc < kk; pc += step {
		kc := min(step, kk-pc)
		beta := st.beta
		if pc > 0 {
			beta = 1
		}
		for jr := 0; jr < cols; jr += sgemmNR512 {
			if pc == 0 && st.packsB {
				// Both B panels of the tile; a packBCols group holds
				// a whole number of tiles.
				if (c0+jr)%packBCols == 0 {
					j.ensure(st, true, (c0+jr)/packBCols)
				}
			}
			nr := min(sgemmNR512, cols-jr)
			bPanels := ceilDiv(nr, sgemmNR)
			bp := j.packB[(c0+jr)*kk+pc*sgemmNR:]
			// SgemmBias: the first pass over C starts from the bias,
			// zero-padded past the last column.
			var bias []float32
			var biasPad [sgemmNR512]float32
			if j.bias != nil && pc == 0 && st.p0 == 0 {
				col := st.j0 + c0 + jr
				if bias = j.bias[col:]; len(bias) < bPanels*sgemmNR {
					copy(biasPad[:], bias)
					bias = biasPad[:]
				}
			}
			for ir := 0; ir < rows; ir += sgemmMR512 {
				mr := min(sgemmMR512, rows-ir)
				aPanels := ceilDiv(mr, sgemmMR)
				ap := j.packA[(r0+ir)*kk+pc*sgemmMR:]
				off := (st.i0+r0+ir)*ldc + st.j0 + c0 + jr
				var aIn []float32 // A in place, when direct
				if direct {
					if j.transA {
						aIn = j.a[(st.p0+pc)*j.lda+st.i0+r0+ir:]
					} else {
						aIn = j.a[(st.i0+r0+ir)*j.lda+st.p0+pc:]
					}
				}
				if mr == aPanels*sgemmMR && nr == bPanels*sgemmNR {
					switch {
					case direct && j.transA:
						sgemmKernel512DirectT(bPanels, kc, aIn, j.lda, bp, bStride, j.c[off:], ldc, alpha, beta)
					case direct:
						sgemmKernel512Direct(bPanels, kc, aIn, j.lda, bp, bStride, j.c[off:], ldc, alpha, beta, bias)
					default:
						sgemmKernel512(aPanels, bPanels, kc, ap, aStride, bp, bStride, j.c[off:], ldc, alpha, beta, bias)
					}
					continue
				}
				// Edge tile: compute it whole into tmp, copy back the
				// part inside C.
				w := bPanels * sgemmNR
				switch {
				case direct && j.transA:
					sgemmKernel512DirectT(bPanels, kc, aIn, j.lda, bp, bStride, tmp[:], w, 1, 0)
				case direct:
					sgemmKernel512Direct(bPanels, kc, aIn, j.lda, bp, bStride, tmp[:], w, 1, 0, bias)
				default:
					sgemmKernel512(aPanels, bPanels, kc, ap, aStride, bp, bStride, tmp[:], w, 1, 0, bias)
				}
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

// sgemmKernel512Go is the portable form of the AVX-512 kernels' contract
// (see sgemmKernel512 in sgemm512_amd64.go): the tile computed 6×16 at a
// time by the Go kernel. The driver never calls it (it takes the AVX-512
// path only when the assembly is enabled); it lets the kernel's test run,
// and check the contract, at every level and in every build.
func sgemmKernel512Go(aPanels, bPanels, kc int, a []float32, aStride int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	for i := range aPanels {
		for h := range bPanels {
			cc := c[i*sgemmMR*ldc+h*sgemmNR:]
			if bias == nil {
				sgemmKernelGo(kc, a[i*aStride:], b[h*bStride:], cc, ldc, alpha, beta)
				continue
			}
			var t [sgemmMR * sgemmNR]float32
			sgemmKernelGo(kc, a[i*aStride:], b[h*bStride:], t[:], sgemmNR, 1, 0)
			bh := bias[h*sgemmNR : (h+1)*sgemmNR]
			for r := range sgemmMR {
				row := cc[r*ldc : r*ldc+sgemmNR]
				for x, v := range t[r*sgemmNR : (r+1)*sgemmNR] {
					if beta == 0 {
						row[x] = alpha * (v + bh[x])
					} else {
						row[x] = alpha*(v+bh[x]) + beta*row[x]
					}
				}
			}
		}
	}
}

// sgemmKernel512DirectGo is the portable form of the direct-A kernels'
// contract (sgemmKernel512Direct): the 12 rows packed into two panels, then
// the portable tile. Like sgemmKernel512Go, it is for the kernels' test.
func sgemmKernel512DirectGo(bPanels, kc int, a []float32, lda int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	ap := make([]float32, sgemmMR512*kc)
	for r := range sgemmMR512 {
		for p, v := range a[r*lda : r*lda+kc] {
			ap[(r/sgemmMR)*sgemmMR*kc+p*sgemmMR+r%sgemmMR] = v
		}
	}
	sgemmKernel512Go(2, bPanels, kc, ap, sgemmMR*kc, b, bStride, c, ldc, alpha, beta, bias)
}

// sgemmReadsAInPlace reports whether the AVX-512 path reads an A with row
// stride lda in place instead of packing it. A transposed A always is: k
// step p of a tile's 12 rows is the contiguous run a[p·lda:], as in a packed
// panel, and each run serves one k step, so no row needs to stay in L1. An
// A that is not transposed is read in place when the 12 rows the kernel
// reads at once fall into L1 sets (64 sets of 64-byte lines) at most 4 to a
// set: rows 4 KiB apart (lda 1024) all share one set and evict each other.
// BenchmarkSgemmDirectA, GFLOP per CPU second, 3 runs each, packed → in
// place (the first run before the transposed kernels existed):
//
//	m=2048,k=256,n=768   (lda 256)   97.8  97.5 100.3 → 101.5 101.5 100.9
//	m=2048,k=256,n=1024  (lda 256)   98.3  98.4  97.8 →  99.5  99.5  98.9
//	m=2048,k=768,n=256   (lda 768)   92.1  93.9  90.1 → 100.9 104.0  99.1
//	m=2048,k=1024,n=256  (lda 1024)  92.6  96.2  94.9 →  92.6  89.4  87.0
//	m=1024,k=2048,n=256,transA       92.8  91.3  93.3 →  98.3 101.2 105.1
//	m=256,k=2048,n=768,transA        95.6  95.9  94.2 →  94.2  96.6  97.0
//	m=256,k=2048,n=1024,transA       95.7  97.0  93.7 →  97.7  96.7  95.7
func sgemmReadsAInPlace(transA bool, lda int) bool {
	if transA {
		return true
	}
	var perSet [64]int
	for r := range sgemmMR512 {
		s := r * lda * 4 / 64 % 64
		if perSet[s]++; perSet[s] > 4 {
			return false
		}
	}
	return true
}

// sgemmKernel512DirectTGo is the portable form of the transposed direct-A
// kernels' contract (sgemmKernel512DirectT): the 12 columns packed into two
// panels, then the portable tile. It is for the kernels' test.
func sgemmKernel512DirectTGo(bPanels, kc int, a []float32, lda int, b []float32, bStride int, c []float32, ldc int, alpha, beta float32) {
	ap := make([]float32, sgemmMR512*kc)
	for p := range kc {
		for r, v := range a[p*lda : p*lda+sgemmMR512] {
			ap[(r/sgemmMR)*sgemmMR*kc+p*sgemmMR+r%sgemmMR] = v
		}
	}
	sgemmKernel512Go(2, bPanels, kc, ap, sgemmMR*kc, b, bStride, c, ldc, alpha, beta, nil)
}
