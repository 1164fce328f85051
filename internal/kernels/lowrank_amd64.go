//go:build amd64 && !purego

package kernels

import "unsafe"

// The low-rank kernels are generated with avo; their declarations are in
// lowrank_amd64_stubs.go and their code in lowrank_amd64.s. To change them,
// edit _asm/lowrank/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./lowrank -out ../lowrank_amd64.s -stubs ../lowrank_amd64_stubs.go -pkg kernels"

// lowRankAVX512 enables the ZMM kernels of the low-rank products (the
// "lowrank" family of the registry, impl.go). Their masks are opmask
// registers, so there is no AVX2 form: below AVX-512 the Go loops run.
var lowRankAVX512 bool

func init() { Register("lowrank", "avx512", LevelAVX512, true, &lowRankAVX512) }

// LowRankAccelerated reports whether the low-rank products run their
// assembly kernels for rows of ld elements (k, n and the strides all ld)
// and masks from bit lo; callers with other means (Sgemm) use those
// otherwise, since the Go loops are scalar.
func LowRankAccelerated(ld, lo int) bool { return lowRankAVX512 && ld%16 == 0 && lo%16 == 0 }

// maskWords returns mask as 16-bit words (bit j of a uint64 is bit j%16 of
// its (j/16)th uint16 on little-endian amd64), or nil.
func maskWords(mask []uint64) []uint16 {
	if mask == nil {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(mask))), 4*len(mask))
}

// lowRankAligned reports whether the kernels' 16-element steps fit: n (the
// length they step over) a multiple of 16, and with a mask the rows of
// stride ld starting on 16-bit mask words.
func lowRankAligned(n int, mask []uint64, lo, ld int) bool {
	return lowRankAVX512 && n%16 == 0 && (mask == nil || lo%16 == 0 && ld%16 == 0)
}

// lowRankPackH returns H (r×rows, stride ldh) as rows×8, zero past r.
func lowRankPackH(r, rows int, h []float32, ldh int) *[]float32 {
	p := GetFloats(rows * 8)
	hp := *p
	for i := range rows {
		row := hp[i*8 : i*8+8]
		for j := range 8 {
			if j < r {
				row[j] = h[j*ldh+i]
			} else {
				row[j] = 0
			}
		}
	}
	return p
}

// dotRows is the number of rows per call of the dot kernel: its output
// block is on the item's stack.
const dotRows = 64

type lowRankDotJob struct {
	r, rows, k int
	alpha      float32
	ap         []float32
	x          []float32
	ldx        int
	words      []uint16
	lo         int
	c          []float32
	ldc        int
}

func (j *lowRankDotJob) Item(_, it int) {
	var out [dotRows * 8]float32
	i0 := it * dotRows
	n := min(dotRows, j.rows-i0)
	x := &j.x[i0*j.ldx]
	if j.words != nil {
		lowRankDot8MaskAVX512(n, j.k/16, &j.ap[0], x, j.ldx, &out[0], &j.words[(j.lo+i0*j.ldx)/16], j.ldx/16)
	} else {
		lowRankDot8AVX512(n, j.k/16, &j.ap[0], x, j.ldx, &out[0])
	}
	for q := range j.r {
		c := j.c[q*j.ldc+i0 : q*j.ldc+i0+n]
		for i := range c {
			c[i] = j.alpha * out[i*8+q]
		}
	}
}

var lowRankDotJobs FreeList[lowRankDotJob]

func lowRankDotAsm(r, rows, k int, alpha float32, a []float32, lda int, x []float32, ldx int, mask []uint64, lo int, c []float32, ldc int) bool {
	if k == 0 || !lowRankAligned(k, mask, lo, ldx) {
		return false
	}
	// A in chunks of 16 columns, its 8 rows (zero past r) together.
	pp := GetFloats(8 * k)
	ap := *pp
	for ch := 0; ch < k; ch += 16 {
		blk := ap[ch*8 : ch*8+128]
		for j := range 8 {
			if j < r {
				copy(blk[j*16:j*16+16], a[j*lda+ch:])
			} else {
				clear(blk[j*16 : j*16+16])
			}
		}
	}
	job := lowRankDotJobs.Get()
	*job = lowRankDotJob{r: r, rows: rows, k: k, alpha: alpha, ap: ap, x: x, ldx: ldx, words: maskWords(mask), lo: lo, c: c, ldc: ldc}
	items := (rows + dotRows - 1) / dotRows
	For(min(Threads(), max(1, rows*k/lowRankGrain)), items, job)
	*job = lowRankDotJob{}
	lowRankDotJobs.Put(job)
	PutFloats(pp)
	return true
}

type lowRankOuterJob struct {
	r, rows, n int
	alpha      float32
	hp         []float32
	x          []float32
	ldx        int
	words      []uint16
	lo         int
	c          []float32
	ldc        int
}

// Item computes the columns of C from 32·it: 32 of them, or the last 16
// when n is an odd multiple of 16.
func (j *lowRankOuterJob) Item(_, it int) {
	var out [8 * 32]float32
	q0 := it * 32
	w := min(32, j.n-q0)
	switch {
	case j.words != nil && w == 32:
		lowRankOuter8x32MaskAVX512(j.rows, &j.hp[0], &j.x[q0], j.ldx, &out[0], 32, &j.words[(j.lo+q0)/16], j.ldx/16)
	case j.words != nil:
		lowRankOuter8x16MaskAVX512(j.rows, &j.hp[0], &j.x[q0], j.ldx, &out[0], 32, &j.words[(j.lo+q0)/16], j.ldx/16)
	case w == 32:
		lowRankOuter8x32AVX512(j.rows, &j.hp[0], &j.x[q0], j.ldx, &out[0], 32)
	default:
		lowRankOuter8x16AVX512(j.rows, &j.hp[0], &j.x[q0], j.ldx, &out[0], 32)
	}
	for q := range j.r {
		c := j.c[q*j.ldc+q0 : q*j.ldc+q0+w]
		for i := range c {
			c[i] = j.alpha * out[q*32+i]
		}
	}
}

var lowRankOuterJobs FreeList[lowRankOuterJob]

func lowRankOuterAsm(r, rows, n int, alpha float32, h []float32, ldh int, x []float32, ldx int, mask []uint64, lo int, c []float32, ldc int) bool {
	if !lowRankAligned(n, mask, lo, ldx) {
		return false
	}
	if rows == 0 {
		for q := range r {
			clear(c[q*ldc : q*ldc+n])
		}
		return true
	}
	hp := lowRankPackH(r, rows, h, ldh)
	job := lowRankOuterJobs.Get()
	*job = lowRankOuterJob{r: r, rows: rows, n: n, alpha: alpha, hp: *hp, x: x, ldx: ldx, words: maskWords(mask), lo: lo, c: c, ldc: ldc}
	For(min(Threads(), max(1, rows*n/lowRankGrain)), (n+31)/32, job)
	*job = lowRankOuterJob{}
	lowRankOuterJobs.Put(job)
	PutFloats(hp)
	return true
}

// expandRows is the number of rows of C per item of an expansion.
const expandRows = 32

type lowRankExpandJob struct {
	rows, n int
	alpha   float32
	hp      []float32
	a       []float32
	lda     int
	acc     bool
	c       []float32
	ldc     int
	words   []uint16
	lo      int
}

func (j *lowRankExpandJob) Item(_, it int) {
	i0 := it * expandRows
	m := min(expandRows, j.rows-i0)
	h, c := &j.hp[i0*8], &j.c[i0*j.ldc]
	switch {
	case j.words != nil && j.acc:
		lowRankExpand8MaskAccAVX512(m, j.n/16, h, &j.a[0], j.lda, c, j.ldc, j.alpha, &j.words[(j.lo+i0*j.ldc)/16], j.ldc/16)
	case j.words != nil:
		lowRankExpand8MaskAVX512(m, j.n/16, h, &j.a[0], j.lda, c, j.ldc, j.alpha, &j.words[(j.lo+i0*j.ldc)/16], j.ldc/16)
	case j.acc:
		lowRankExpand8AccAVX512(m, j.n/16, h, &j.a[0], j.lda, c, j.ldc, j.alpha)
	default:
		for i := range m {
			clear(j.c[(i0+i)*j.ldc : (i0+i)*j.ldc+j.n])
		}
		lowRankExpand8AccAVX512(m, j.n/16, h, &j.a[0], j.lda, c, j.ldc, j.alpha)
	}
}

var lowRankExpandJobs FreeList[lowRankExpandJob]

func lowRankExpandAsm(r, rows, n int, alpha float32, h []float32, ldh int, a []float32, lda int, acc bool, c []float32, ldc int, mask []uint64, lo int) bool {
	if !lowRankAligned(n, mask, lo, ldc) {
		return false
	}
	hp := lowRankPackH(r, rows, h, ldh)
	// The kernel reads eight rows of A; below rank 8 a zero-padded copy.
	var ap *[]float32
	if r < 8 {
		ap = GetFloats(8 * n)
		for j := range 8 {
			if j < r {
				copy((*ap)[j*n:j*n+n], a[j*lda:])
			} else {
				clear((*ap)[j*n : j*n+n])
			}
		}
		a, lda = *ap, n
	}
	job := lowRankExpandJobs.Get()
	*job = lowRankExpandJob{rows: rows, n: n, alpha: alpha, hp: *hp, a: a, lda: lda, acc: acc, c: c, ldc: ldc, words: maskWords(mask), lo: lo}
	For(min(Threads(), max(1, rows*n/lowRankGrain)), (rows+expandRows-1)/expandRows, job)
	*job = lowRankExpandJob{}
	lowRankExpandJobs.Put(job)
	PutFloats(hp)
	if ap != nil {
		PutFloats(ap)
	}
	return true
}
