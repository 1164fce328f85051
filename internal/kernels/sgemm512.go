package kernels

// The AVX-512 path of the packed SGEMM. It packs exactly as the AVX2 path
// does (6-row A micro-panels, 16-column B micro-panels; a B panel's k step
// is one ZMM register), and computes C in 12×32 tiles, two A panels by two
// B panels, with 24 ZMM accumulators (_asm/sgemm512). Tile edges that are a
// multiple of 6 rows and 16 columns but not of 12 and 32 use the 6- and
// 16-wide variants of the kernel; ragged ones go through a buffer.

// Blocking of the AVX-512 path: the AVX2 path's values, which
// BenchmarkSgemmBlocking sweeps.
const (
	sgemmKC512 = 256
	sgemmMC512 = 96
	sgemmNT512 = 512

	sgemmMR512 = 2 * sgemmMR // rows of the main AVX-512 tile
	sgemmNR512 = 2 * sgemmNR // columns of the main AVX-512 tile

	// sgemmTmpLen is the size of the edge buffer of either path.
	sgemmTmpLen = sgemmMR512 * sgemmNR512
)

// computeTile512 is computeTile for the AVX-512 micro-kernels.
func (j *sgemmJob) computeTile512(st *sgemmStep, ti, tj int, tmp *[sgemmTmpLen]float32) {
	r0, c0 := ti*j.mc, tj*j.nt
	rows, cols := min(j.mc, st.mm-r0), min(j.nt, st.nn-c0)
	kk, ldc, alpha := st.kk, j.ldc, j.alpha
	aStride, bStride := sgemmMR*kk, sgemmNR*kk // from one panel to the next
	j.ensure(st, false, ti)
	for pc := 0; pc < kk; pc += j.blk.kc {
		kc := min(j.blk.kc, kk-pc)
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
			for ir := 0; ir < rows; ir += sgemmMR512 {
				mr := min(sgemmMR512, rows-ir)
				aPanels := ceilDiv(mr, sgemmMR)
				ap := j.packA[(r0+ir)*kk+pc*sgemmMR:]
				off := (st.i0+r0+ir)*ldc + st.j0 + c0 + jr
				if mr == aPanels*sgemmMR && nr == bPanels*sgemmNR {
					sgemmKernel512(aPanels, bPanels, kc, ap, aStride, bp, bStride, j.c[off:], ldc, alpha, beta)
					continue
				}
				// Edge tile: compute it whole into tmp, copy back the
				// part inside C.
				w := bPanels * sgemmNR
				sgemmKernel512(aPanels, bPanels, kc, ap, aStride, bp, bStride, tmp[:], w, 1, 0)
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
