package attention

// Tile products. Every matrix product of the FlashAttention kernels is
//
//	C[m×n] = op(A·B)   with A(i,p) = a[i·sai + p·sak], B(p,j) = b[p·ldb + j],
//
// C(i,j) = c[i·ldc + j], so that A can be read row-major (sai = lda, sak = 1)
// or transposed (sai = 1, sak = lda) without copying, and op is one of:
//
//	tileSet:   C  = A·B
//	tileAdd:   C += A·B
//	tileDS:    C  = P ∘ (A·B − dv[i])       (P laid out like C; the score
//	                                         gradient of the backward pass)
//	tileDSAdd: C  = P ∘ (C + A·B − dv[i])   (the last chunk of a split tileDS)
//
// Each element of A·B is a chain of fused multiply-adds over k. Products
// over the head dimension (scores and dP) split k into chunks of
// dotChunk(D) whose results are added in order, which keeps their rounding
// error close to that of a vector dot product (the tolerance of the tests is
// relative to the naive kernels, which use kernels.Dot), and rowDot
// computes rowsum(dO∘O) with exactly the same chain so that dP − D is
// exactly zero where O is a single value row.
//
// The 6×16 register-blocked AVX2/FMA kernel covers whole 6-row, 16-column
// blocks; the rest runs in Go. On AVX-512 CPUs a 6×32 kernel takes the whole
// 32-column blocks first, and adds the chunks of a product in registers.
// Callers pad their tile buffers so that nearly all the work falls into
// whole blocks.

const (
	tileSet = iota
	tileAdd
	tileDS
	tileDSAdd
)

// dotChunk returns the chunk length of products over a head dimension d.
// Chunks of 8 cost about 5% of the forward+backward time at D=64 (one more
// pass over the output tile per chunk) and bring the rounding error of the
// scores and dP within the tests' tolerance, which is relative to the
// 32-way split sums of kernels.Dot (single chains of 16 and more failed it
// for about 1 configuration in 500).
func dotChunk(d int) int { return min(max(d, 1), 8) }

// rowDot returns Σ x[i]·y[i] rounded as an element of a product over
// k = len(x) in chunks of kc (see gemmChunked).
func rowDot(x, y []float32, kc int) float32 {
	n := len(x)
	if n == 0 {
		return 0
	}
	_ = y[n-1]
	if c, ok := rowDotAsm(x, y, kc); ok {
		return c
	}
	var c float32
	for k0 := 0; k0 < n; k0 += kc {
		s := float64(c)
		for i := k0; i < min(k0+kc, n); i++ {
			s += float64(x[i]) * float64(y[i])
		}
		c = float32(s)
	}
	return c
}

// rowDot8 sets out[r] = rowDot(x[r·sx:][:n], y[r·sy:][:n], kc) for r < 8,
// bit for bit; the assembly runs the eight chains side by side.
func rowDot8(x []float32, sx int, y []float32, sy, n, kc int, out *[8]float32) {
	if n == 0 {
		*out = [8]float32{}
		return
	}
	_, _ = x[7*sx+n-1], y[7*sy+n-1]
	if rowDot8Asm(x, sx, y, sy, n, kc, out) {
		return
	}
	for r := range out {
		out[r] = rowDot(x[r*sx:][:n], y[r*sy:][:n], kc)
	}
}

// gemmChunked is gemm with the k dimension split into chunks of kc (mode
// tileSet, tileAdd or tileDS). The AVX-512 kernel computes the whole 6×32
// blocks, chunks included, with the same rounding; the rest goes through
// gemmChunks.
func gemmChunked(kc, m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) {
	if m <= 0 || n <= 0 {
		return
	}
	checkTile(m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
	m6, n32 := gemmWideAsm(kc, m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
	if m6 == 0 {
		gemmChunks(kc, m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
		return
	}
	if n32 < n { // the last columns of the whole row blocks
		pr := p
		if mode >= tileDS {
			pr = p[n32:]
		}
		gemmChunks(kc, m6, n-n32, k, a, sai, sak, b[n32:], ldb, c[n32:], ldc, mode, pr, dv)
	}
	if m6 < m { // the last rows
		pr, dr := p, dv
		if mode >= tileDS {
			pr, dr = p[m6*ldc:], dv[m6:]
		}
		gemmChunks(kc, m-m6, n, k, a[m6*sai:], sai, sak, b, ldb, c[m6*ldc:], ldc, mode, pr, dr)
	}
}

// checkTile panics (an index out of range) if a slice is too short for an
// m×n product over k, m and n positive, before any assembly reads it.
func checkTile(m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) {
	if k > 0 {
		_ = a[(m-1)*sai+(k-1)*sak]
		_ = b[(k-1)*ldb+n-1]
	}
	_ = c[(m-1)*ldc+n-1]
	if mode >= tileDS {
		_ = p[(m-1)*ldc+n-1]
		_ = dv[m-1]
	}
}

// gemmChunks is gemmChunked for the kernels that compute one chunk per
// call: a product per chunk, each adding onto C.
func gemmChunks(kc, m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) {
	if k <= kc {
		gemmNarrow(m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
		return
	}
	for k0 := 0; k0 < k; k0 += kc {
		kk := min(kc, k-k0)
		md := tileAdd
		switch {
		case k0 == 0 && mode != tileDS:
			md = mode
		case k0 == 0:
			md = tileSet
		case k0+kk == k && mode == tileDS:
			md = tileDSAdd
		}
		gemmNarrow(m, n, kk, a[k0*sak:], sai, sak, b[k0*ldb:], ldb, c, ldc, md, p, dv)
	}
}

const (
	microM = 6  // rows of the register block
	microN = 16 // columns of the register block
)

// gemm computes C = op(A·B) as described above. It panics if a slice is too
// short for the dimensions (an internal error: callers size their buffers).
func gemm(m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) {
	if mode == tileDSAdd { // only gemmChunks's calls use it
		gemmNarrow(m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
		return
	}
	gemmChunked(max(k, 1), m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
}

// gemmNarrow is gemm with the 6×16 kernel and Go: one chunk per call, every
// mode.
func gemmNarrow(m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) {
	if m <= 0 || n <= 0 {
		return
	}
	checkTile(m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
	if m6 := gemmAsm(m, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv); m6 > 0 {
		if m6 == m {
			return
		}
		// Remaining rows, all columns.
		a, c = a[m6*sai:], c[m6*ldc:]
		if mode >= tileDS {
			p, dv = p[m6*ldc:], dv[m6:]
		}
		m -= m6
	}
	gemmGeneric(m, 0, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
}

// gemmGeneric computes columns [j0, j1) of C = op(A·B) for m rows in Go.
// It accumulates in float64 (one rounding per element, like the FMA chains
// of the assembly kernel, where plain float32 multiply-adds would round
// twice per step).
func gemmGeneric(m, j0, j1, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) {
	const chunk = 64
	var acc [chunk]float64
	for i := 0; i < m; i++ {
		for jc := j0; jc < j1; jc += chunk {
			je := min(jc+chunk, j1)
			crow := c[i*ldc+jc : i*ldc+je]
			sum := acc[:len(crow)]
			for j := range sum {
				sum[j] = 0
				if mode == tileAdd || mode == tileDSAdd {
					sum[j] = float64(crow[j])
				}
			}
			for q := 0; q < k; q++ {
				av := float64(a[i*sai+q*sak])
				brow := b[q*ldb+jc : q*ldb+je]
				for j, bv := range brow {
					sum[j] += av * float64(bv)
				}
			}
			if mode >= tileDS {
				prow := p[i*ldc+jc : i*ldc+je]
				d := dv[i]
				for j := range sum {
					crow[j] = prow[j] * (float32(sum[j]) - d)
				}
				continue
			}
			for j, x := range sum {
				crow[j] = float32(x)
			}
		}
	}
}

// transposeRows writes dst[x·ldd + c] = s·src[c·lds + x] for c < n, x < d:
// the Kᵀ and Vᵀ operands of the tile products. The assembly transposes
// 8×8 blocks in registers (transpose8); the rest runs in transposeRange.
// The product s·v rounds once, as the callers' one multiplication did.
func transposeRows(dst []float32, ldd int, src []float32, lds, n, d int, s float32) {
	if n <= 0 || d <= 0 {
		return
	}
	_ = src[(n-1)*lds+d-1]
	_ = dst[(d-1)*ldd+n-1]
	n8, d8 := transposeAsm(dst, ldd, src, lds, n, d, s)
	transposeRange(dst, ldd, src, lds, 0, n8, d8, d, s)
	transposeRange(dst, ldd, src, lds, n8, n, 0, d, s)
}

// transposeRange is transposeRows for the source rows [c0, c1) and
// columns [x0, x1) in Go. Eight source rows are read side by side, so
// every store run is eight contiguous floats and the eight source rows
// stay in L1 across the columns; writing one column at a time instead (a
// store per cache line) cost about 5% of a small training step.
func transposeRange(dst []float32, ldd int, src []float32, lds, c0, c1, x0, x1 int, s float32) {
	if c0 >= c1 || x0 >= x1 {
		return
	}
	const tb = 8
	c := c0
	for ; c+tb <= c1; c += tb {
		r0, r1 := src[(c+0)*lds:][:x1], src[(c+1)*lds:][:x1]
		r2, r3 := src[(c+2)*lds:][:x1], src[(c+3)*lds:][:x1]
		r4, r5 := src[(c+4)*lds:][:x1], src[(c+5)*lds:][:x1]
		r6, r7 := src[(c+6)*lds:][:x1], src[(c+7)*lds:][:x1]
		for x := x0; x < x1; x++ {
			o := (*[tb]float32)(dst[x*ldd+c:])
			o[0], o[1], o[2], o[3] = s*r0[x], s*r1[x], s*r2[x], s*r3[x]
			o[4], o[5], o[6], o[7] = s*r4[x], s*r5[x], s*r6[x], s*r7[x]
		}
	}
	for ; c < c1; c++ {
		for x, v := range src[c*lds:][x0:x1] {
			dst[(x0+x)*ldd+c] = s * v
		}
	}
}

// scaleRowsTo writes dst[r·ldd + j] = s[r·ss]·src[r·lds + j] for r < rows,
// j < d (ss = 0: every row by s[0]), one rounding per element: the outputs
// of the attention kernels. The assembly takes whole 8-column groups of
// all the rows in one call; the Go loop of scaleTo cost about 2% of a small
// training step.
func scaleRowsTo(dst []float32, ldd int, src []float32, lds, rows, d int, s []float32, ss int) {
	if rows <= 0 || d <= 0 {
		return
	}
	_ = dst[(rows-1)*ldd+d-1]
	_ = src[(rows-1)*lds+d-1]
	_ = s[(rows-1)*ss]
	d8 := scaleRowsAsm(dst, ldd, src, lds, rows, d, s, ss)
	if d8 == d {
		return
	}
	for r := 0; r < rows; r++ {
		scaleTo(dst[r*ldd+d8:r*ldd+d], src[r*lds+d8:], s[r*ss])
	}
}

// scaleTo writes dst[i] = s·src[i] (one rounding, as a copy followed by
// kernels.Scale).
func scaleTo(dst, src []float32, s float32) {
	src = src[:len(dst)]
	for i, v := range src {
		dst[i] = s * v
	}
}
