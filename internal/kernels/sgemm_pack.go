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

// packA packs op(A)[i0:i0+rows, p0:p0+kk] into dst (see above).
func packA(dst []float32, transA bool, a []float32, lda, i0, rows, p0, kk int) {
	for q := 0; q*sgemmMR < rows; q++ {
		d := dst[q*sgemmMR*kk : (q+1)*sgemmMR*kk]
		r := min(sgemmMR, rows-q*sgemmMR)
		i := i0 + q*sgemmMR
		switch {
		case transA && r == sgemmMR:
			// op(A)[i+0..5][p] = a[p·lda + i+0..5]: six contiguous floats.
			for p := range kk {
				*(*[sgemmMR]float32)(d[p*sgemmMR:]) = *(*[sgemmMR]float32)(a[(p0+p)*lda+i:])
			}
		case transA:
			for p := range kk {
				dd := d[p*sgemmMR : (p+1)*sgemmMR]
				copy(dd, a[(p0+p)*lda+i:(p0+p)*lda+i+r])
				clear(dd[r:])
			}
		case r == sgemmMR:
			// Six rows read side by side, so the writes are sequential.
			r0 := a[(i+0)*lda+p0:][:kk]
			r1 := a[(i+1)*lda+p0:][:kk]
			r2 := a[(i+2)*lda+p0:][:kk]
			r3 := a[(i+3)*lda+p0:][:kk]
			r4 := a[(i+4)*lda+p0:][:kk]
			r5 := a[(i+5)*lda+p0:][:kk]
			for p := range kk {
				dd := (*[sgemmMR]float32)(d[p*sgemmMR:])
				dd[0], dd[1], dd[2], dd[3], dd[4], dd[5] = r0[p], r1[p], r2[p], r3[p], r4[p], r5[p]
			}
		default:
			clear(d)
			for rr := range r {
				row := a[(i+rr)*lda+p0:][:kk]
				for p, v := range row {
					d[p*sgemmMR+rr] = v
				}
			}
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
		// Row p of op(B) is contiguous: walk it once, dealing 16-float
		// pieces to the panels, so the source streams sequentially.
		full := cols / sgemmNR
		for p := range kk {
			src := b[(p0+p)*ldb+j0:][:cols]
			for q := range full {
				*(*[sgemmNR]float32)(dst[q*sgemmNR*kk+p*sgemmNR:]) = *(*[sgemmNR]float32)(src[q*sgemmNR:])
			}
			if r := cols - full*sgemmNR; r > 0 {
				dd := dst[full*sgemmNR*kk+p*sgemmNR:][:sgemmNR]
				copy(dd, src[full*sgemmNR:])
				clear(dd[r:])
			}
		}
		return
	}
	// op(B)[p][j] = b[j·ldb + p]: each panel gathers from 16 rows of b.
	for q := 0; q*sgemmNR < cols; q++ {
		d := dst[q*sgemmNR*kk : (q+1)*sgemmNR*kk]
		c := min(sgemmNR, cols-q*sgemmNR)
		j := j0 + q*sgemmNR
		if c < sgemmNR {
			clear(d)
		}
		for pb := 0; pb < kk; pb += packBBlock {
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
