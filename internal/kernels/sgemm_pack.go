package kernels

// Packing copies blocks of op(A) and op(B) into the layout the micro-kernel
// reads: the transposes are resolved here, once per element, instead of in
// the kernel's inner loop, which then sees unit-stride streams only.
//
// A packed A block of rows × kk holds ceil(rows/6) micro-panels of 6·kk
// floats; element (r, p) of panel q is at q·6·kk + p·6 + r. A packed B block
// of kk × cols holds ceil(cols/16) micro-panels of 16·kk floats; element
// (p, c) of panel q is at q·16·kk + p·16 + c. Rows (columns) past the edge of
// the matrix are zero, so a partial tile computes garbage-free zeros there.
//
// On AVX2 CPUs the full panels are packed by assembly (8×8 transposes in
// registers for the gathers), which runs 3–6× faster than the Go loops; at
// 256³ packing is otherwise a fifth of the work.

// packA packs op(A)[i0:i0+rows, p0:p0+kk] into dst (see above).
func packA(dst []float32, transA bool, a []float32, lda, i0, rows, p0, kk int) {
	if transA {
		packAT(dst, a, lda, i0, rows, p0, kk)
		return
	}
	for q := 0; q*sgemmMR < rows; q++ {
		d := dst[q*sgemmMR*kk : (q+1)*sgemmMR*kk]
		r := min(sgemmMR, rows-q*sgemmMR)
		i := i0 + q*sgemmMR
		if r < sgemmMR {
			clear(d)
			for rr := range r {
				row := a[(i+rr)*lda+p0:][:kk]
				for p, v := range row {
					d[p*sgemmMR+rr] = v
				}
			}
			continue
		}
		p := packA6Asm(d, a, lda, i, p0, kk)
		if p == kk {
			continue
		}
		// Six rows read side by side, so the writes are sequential.
		r0 := a[(i+0)*lda+p0:][:kk]
		r1 := a[(i+1)*lda+p0:][:kk]
		r2 := a[(i+2)*lda+p0:][:kk]
		r3 := a[(i+3)*lda+p0:][:kk]
		r4 := a[(i+4)*lda+p0:][:kk]
		r5 := a[(i+5)*lda+p0:][:kk]
		for ; p < kk; p++ {
			dd := (*[sgemmMR]float32)(d[p*sgemmMR:])
			dd[0], dd[1], dd[2], dd[3], dd[4], dd[5] = r0[p], r1[p], r2[p], r3[p], r4[p], r5[p]
		}
	}
}

// packAT is packA for a transposed A: op(A)[i][p] = a[p·lda + i], so each k
// step of the block is one contiguous run of the stored matrix, dealt six
// floats to each panel.
func packAT(dst []float32, a []float32, lda, i0, rows, p0, kk int) {
	full := rows / sgemmMR
	r := rows - full*sgemmMR
	pFull := packATAsm(dst, a, lda, i0, full, p0, kk) // full panels are packed from this k step on
	for p := range kk {
		src := a[(p0+p)*lda+i0:][:rows]
		if p >= pFull {
			for q := range full {
				*(*[sgemmMR]float32)(dst[q*sgemmMR*kk+p*sgemmMR:]) = *(*[sgemmMR]float32)(src[q*sgemmMR:])
			}
		}
		if r > 0 {
			dd := dst[full*sgemmMR*kk+p*sgemmMR:][:sgemmMR]
			copy(dd, src[full*sgemmMR:])
			clear(dd[r:])
		}
	}
}

// packBBlock is how many k steps of a transposed B panel are gathered at a
// time: 64 steps of 16 floats (4 KiB) stay in L1 while the 16 source rows
// are visited in turn.
const packBBlock = 64

// packB packs op(B)[p0:p0+kk, j0:j0+cols] into dst (see above).
func packB(dst []float32, transB bool, b []float32, ldb, p0, kk, j0, cols int) {
	if !transB {
		packBN(dst, b, ldb, p0, kk, j0, cols)
		return
	}
	// op(B)[p][j] = b[j·ldb + p]: each panel gathers from 16 rows of b.
	for q := 0; q*sgemmNR < cols; q++ {
		d := dst[q*sgemmNR*kk : (q+1)*sgemmNR*kk]
		c := min(sgemmNR, cols-q*sgemmNR)
		j := j0 + q*sgemmNR
		p := 0
		if c == sgemmNR {
			p = packBT16Asm(d, b, ldb, j, p0, kk)
		}
		if p == kk {
			continue
		}
		if c < sgemmNR {
			clear(d)
		}
		for pb := p; pb < kk; pb += packBBlock {
			pe := min(kk, pb+packBBlock)
			for jj := range c {
				row := b[(j+jj)*ldb+p0+pb : (j+jj)*ldb+p0+pe]
				dd := d[pb*sgemmNR+jj:]
				for p, v := range row {
					dd[p*sgemmNR] = v
				}
			}
		}
	}
}

// packBN is packB for a B that is not transposed. Row p of op(B) is
// contiguous: walk it once, dealing 16-float pieces to the panels, so the
// source streams sequentially.
func packBN(dst []float32, b []float32, ldb, p0, kk, j0, cols int) {
	full := cols / sgemmNR
	r := cols - full*sgemmNR
	pFull := packBNAsm(dst, b, ldb, j0, full, p0, kk) // full panels are packed from this k step on
	for p := range kk {
		src := b[(p0+p)*ldb+j0:][:cols]
		if p >= pFull {
			for q := range full {
				*(*[sgemmNR]float32)(dst[q*sgemmNR*kk+p*sgemmNR:]) = *(*[sgemmNR]float32)(src[q*sgemmNR:])
			}
		}
		if r > 0 {
			dd := dst[full*sgemmNR*kk+p*sgemmNR:][:sgemmNR]
			copy(dd, src[full*sgemmNR:])
			clear(dd[r:])
		}
	}
}
