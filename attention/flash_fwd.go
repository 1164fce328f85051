package attention

import (
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// Forward computes attention o = softmax(scale·q·kᵀ + mask)·v with the
// FlashAttention algorithm and returns o with the log-sum-exp of every score
// row, which Backward needs. q is [B, H, Tq, D]; k and v are [B, KVH, Tk, D]
// with KVH dividing H. o is a new contiguous [B, H, Tq, D] tensor and lse a
// new slice of B·H·Tq values in [B, H, Tq] order (natural logarithm; −Inf for
// fully masked rows).
func Forward(q, k, v Tensor, opts Options) (o Tensor, lse []float32, err error) {
	var p problem
	if err = checkQKV(&p, q, k, v); err != nil {
		return Tensor{}, nil, err
	}
	o = NewTensor(q.B, q.H, q.T, q.D)
	lse = make([]float32, q.B*q.H*q.T)
	if err = ForwardInto(o, lse, q, k, v, opts); err != nil {
		return Tensor{}, nil, err
	}
	return o, lse, nil
}

// ForwardInto is Forward writing into o (shaped like q, any strides) and lse
// (B·H·Tq elements). Its scratch and call state come from pools: once they
// are warm it allocates nothing.
func ForwardInto(o Tensor, lse []float32, q, k, v Tensor, opts Options) error {
	j := fwdJobs.Get()
	defer j.free()
	p := &j.p
	if err := checkQKV(p, q, k, v); err != nil {
		return err
	}
	if err := p.resolve(&opts, false, 0); err != nil {
		return err
	}
	if err := checkSame("o", o, q); err != nil {
		return err
	}
	if err := checkLSE(lse, p); err != nil {
		return err
	}
	j.q, j.k, j.v, j.o, j.lse = q, k, v, o, lse
	j.run()
	return nil
}

// fwdJob is the pooled state of one forward call.
type fwdJob struct {
	p          problem
	q, k, v, o Tensor
	lse        []float32
	nqb        int           // query blocks per head
	mr, lds    int           // padded block rows, leading dim of the scores
	scratch    []*fwdScratch // per worker, taken from fwdPool on first use
}

var fwdJobs kernels.FreeList[fwdJob]

// free drops the job's references to the caller's data and pools it.
func (j *fwdJob) free() {
	j.q, j.k, j.v, j.o, j.lse = Tensor{}, Tensor{}, Tensor{}, Tensor{}, nil
	fwdJobs.Put(j)
}

// fwdPool holds per-worker forward scratch.
var fwdPool kernels.FreeList[fwdScratch]

// fwdScratch is one worker's memory in the forward pass.
type fwdScratch struct {
	qs  []float32 // query block, zero-padded to mr × D
	s   []float32 // scores, then probabilities, mr × lds
	acc []float32 // unnormalized output, mr × D
	m   []float32 // running maximum per row
	l   []float64 // running sum per row, in float64: it sets the log-sum-exp
	inv []float32 // 1/l per row, the output's scale
	// kt holds scale·Kᵀ of one (batch, kv head), D rows of ktLD floats,
	// zero-padded so that tile products may read whole 16-column blocks
	// past the last key; ktHead says which (-1: none yet).
	kt     []float32
	ktLD   int
	ktHead int
	// sp holds the key span of each row of the tile, raw and cov the
	// spans of its 6-row blocks (see blockSpans).
	sp, raw, cov []span
}

func (s *fwdScratch) size(p *problem, mr, lds int) {
	d := p.D
	s.qs = grow(s.qs, mr*d)
	s.s = grow(s.s, mr*lds)
	s.acc = grow(s.acc, mr*d)
	s.m = grow(s.m, mr)
	s.inv = grow(s.inv, mr)
	s.sp = grow(s.sp, mr)
	s.raw = grow(s.raw, mr/microM)
	s.cov = grow(s.cov, mr/microM)
	if cap(s.l) < mr {
		s.l = make([]float64, mr)
	}
	s.l = s.l[:mr]
	s.ktLD = p.Tk + microN
	s.kt = grow(s.kt, d*s.ktLD)
	s.ktHead = -1
}

// keysT returns Kᵀ of kv head kh of sequence b, transposing it unless the
// worker's previous item used the same head.
func (s *fwdScratch) keysT(p *problem, k Tensor, b, kh int) []float32 {
	if head := b*p.KVH + kh; s.ktHead != head {
		s.ktHead = head
		if p.Tk > 0 {
			transposeRows(s.kt, s.ktLD, k.Data[k.Index(b, kh, 0, 0):], k.StrideT, p.Tk, p.D, p.scale)
		}
		for d := 0; d < p.D; d++ {
			clear(s.kt[d*s.ktLD+p.Tk : (d+1)*s.ktLD])
		}
	}
	return s.kt
}

// run runs the forward pass on validated arguments.
func (j *fwdJob) run() {
	p := &j.p
	if p.B*p.H*p.Tq == 0 {
		return
	}
	j.nqb = (p.Tq + p.bq - 1) / p.bq
	nitems := p.B * p.H * j.nqb
	j.mr = roundUp(p.bq, microM)
	j.lds = roundUp(p.bk, microN)
	j.scratch = resizeScratch(j.scratch, min(p.workers, nitems))
	// Items run grouped by (batch, kv head), so a worker's consecutive
	// items usually share the transposed keys; within a group, later
	// query blocks (more keys under a causal mask) go first so that the
	// queue ends with short items.
	kernels.For(p.workers, nitems, j)
	for w, s := range j.scratch {
		if s != nil {
			fwdPool.Put(s)
			j.scratch[w] = nil
		}
	}
}

// Item computes work item it, one query block of one head.
func (j *fwdJob) Item(w, it int) {
	p := &j.p
	s := j.scratch[w]
	if s == nil {
		s = fwdPool.Get()
		s.size(p, j.mr, j.lds)
		j.scratch[w] = s
	}
	nqb := j.nqb
	pair, rest := it/(nqb*p.G), it%(nqb*p.G)
	b, kh := pair/p.KVH, pair%p.KVH
	qb, h := nqb-1-rest/p.G, kh*p.G+rest%p.G
	forwardBlock(p, s, j.lds, j.q, j.k, j.v, j.o, j.lse, b, h, qb)
}

// resizeScratch returns s resliced to n nil entries, reallocated if its
// capacity is too small.
func resizeScratch[T any](s []*T, n int) []*T {
	if cap(s) < n {
		return make([]*T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// forwardBlock computes query block qb of head h of sequence b.
func forwardBlock(p *problem, s *fwdScratch, lds int, q, k, v, o Tensor, lse []float32, b, h, qb int) {
	d := p.D
	kh := h / p.G
	i0 := qb * p.bq
	i1 := min(i0+p.bq, p.Tq)
	br := i1 - i0
	lseRow := lse[(b*p.H+h)*p.Tq+i0 : (b*p.H+h)*p.Tq+i1]
	klo, khi := p.blockKeyRange(b, i0, i1)
	if klo >= khi {
		for r := 0; r < br; r++ {
			clear(o.Row(b, h, i0+r))
			lseRow[r] = negInf
		}
		return
	}
	mr := roundUp(br, microM)
	qs, sc, acc := s.qs[:mr*d], s.s, s.acc[:mr*d]
	m, l := s.m[:mr], s.l[:mr]
	for r := 0; r < br; r++ {
		row := qs[r*d : (r+1)*d]
		copy(row, q.Row(b, h, i0+r))
	}
	clear(qs[br*d:])
	clear(acc)
	for r := range m {
		m[r], l[r] = negInf, 0
	}
	kt := s.keysT(p, k, b, kh)
	sp, raw, cov := s.sp[:br], s.raw[:mr/microM], s.cov[:mr/microM]
	for j0 := klo; j0 < khi; j0 += p.bk {
		bc := min(p.bk, khi-j0)
		p.rowSpans(sp, b, i0, j0, bc)
		blockSpans(cov, raw, sp, roundUp(bc, microN))
		// S = Q·(scale·K)ᵀ for the tile, whole 16-column blocks: the same
		// products, in the same order, as the backward pass computes, so
		// that its probabilities exp(S − lse) match these exactly. Blocks
		// of rows compute only the columns their rows see.
		gemmCover(cov, dotChunk(d), d, qs, d, kt[j0:], s.ktLD, sc, lds, tileSet, nil, nil)
		for r := 0; r < br; r++ {
			row := sc[r*lds : r*lds+bc]
			lo, hi := sp[r].lo, sp[r].hi
			if lo >= hi {
				clear(row)
				continue
			}
			seg := row[lo:hi]
			mold := m[r]
			mnew := max(mold, kernels.Max(seg))
			sum := kernels.ExpSubSum(seg, seg, mnew)
			clear(row[:lo])
			clear(row[hi:])
			if mnew > mold {
				if mold != negInf {
					alpha := math.Exp(float64(mold - mnew))
					l[r] *= alpha
					kernels.Scale(float32(alpha), acc[r*d:(r+1)*d])
				}
				m[r] = mnew
			}
			l[r] += float64(sum)
		}
		// acc += P·V over the keys each row block sees: the probabilities
		// outside them are zeros (rows past br are zero query rows, whose
		// scores are zeros, and add nothing to rows that are not output).
		for rb, u := range raw {
			if u.lo < u.hi {
				r0 := rb * microM
				gemm(microM, d, u.hi-u.lo, sc[r0*lds+u.lo:], lds, 1, v.Data[v.Index(b, kh, j0+u.lo, 0):], v.StrideT, acc[r0*d:], d, tileAdd, nil, nil)
			}
		}
	}
	inv := s.inv[:br]
	masked := false
	for r := 0; r < br; r++ {
		if l[r] == 0 {
			inv[r], lseRow[r] = 0, negInf
			masked = true
			continue
		}
		inv[r] = float32(1 / l[r])
		// One rounding: the backward pass divides by exp(lse), so its
		// error is a relative error of every gradient of the row.
		lseRow[r] = float32(float64(m[r]) + math.Log(l[r]))
	}
	scaleRowsTo(o.Data[o.Index(b, h, i0, 0):], o.StrideT, acc, d, br, d, inv, 1)
	if masked { // exact zeros, whatever the values of the masked keys
		for r := 0; r < br; r++ {
			if l[r] == 0 {
				clear(o.Row(b, h, i0+r))
			}
		}
	}
}
