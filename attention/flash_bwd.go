package attention

import (
	"github.com/galleon-ml/galleon/internal/kernels"
)

// Backward returns the gradients of the attention inputs given the forward
// output o, its log-sum-exp lse (from Forward) and the output gradient dO
// (shaped like q). It recomputes the probabilities tile by tile from lse and
// never allocates a T×T buffer. dq is a new [B, H, Tq, D] tensor, dk and dv
// new [B, KVH, Tk, D] tensors. opts must be the options of the forward call
// (tile sizes and workers may differ).
func Backward(q, k, v, o Tensor, lse []float32, dO Tensor, opts Options) (dq, dk, dv Tensor, err error) {
	var p problem
	if err = checkQKV(&p, q, k, v); err != nil {
		return
	}
	dq = NewTensor(q.B, q.H, q.T, q.D)
	dk = NewTensor(k.B, k.H, k.T, k.D)
	dv = NewTensor(v.B, v.H, v.T, v.D)
	if err = BackwardInto(dq, dk, dv, q, k, v, o, lse, dO, opts); err != nil {
		return Tensor{}, Tensor{}, Tensor{}, err
	}
	return dq, dk, dv, nil
}

// BackwardInto is Backward writing (not adding) the gradients into dq, dk
// and dv, which may have any strides (for example the column ranges of one
// packed QKV gradient, see PackedQKV). Its scratch and call state come from
// pools: once they are warm it allocates nothing.
func BackwardInto(dq, dk, dv, q, k, v, o Tensor, lse []float32, dO Tensor, opts Options) error {
	j := bwdJobs.Get()
	defer j.free()
	p := &j.p
	if err := checkQKV(p, q, k, v); err != nil {
		return err
	}
	if err := p.resolve(&opts, false, 0); err != nil {
		return err
	}
	if err := checkBackwardArgs(p, dq, dk, dv, q, k, o, dO); err != nil {
		return err
	}
	if err := checkLSE(lse, p); err != nil {
		return err
	}
	j.a = bwdArgs{q: q, k: k, v: v, o: o, dO: dO, lse: lse, dq: dq, dk: dk, dv: dv}
	j.run()
	return nil
}

// bwdJob is the pooled state of one backward call. Its item method runs one
// work item (key blocks of a (batch, kv head)); bwdMerge's sums the partial
// dq of one (batch, kv head) when the key blocks are split.
type bwdJob struct {
	p       problem
	a       bwdArgs
	g       bwdGeom
	parts   []float32     // partial dq per item, when split
	partLen int           // elements of one partial dq
	scratch []*bwdScratch // per worker, taken from bwdPool on first use
}

// bwdMerge is a bwdJob in its merge phase.
type bwdMerge bwdJob

var bwdJobs kernels.FreeList[bwdJob]

// free drops the job's references to the caller's data and pools it.
func (j *bwdJob) free() {
	j.a, j.parts = bwdArgs{}, nil
	bwdJobs.Put(j)
}

// bwdArgs gathers the tensors of a backward call.
type bwdArgs struct {
	q, k, v, o, dO Tensor
	lse            []float32
	dq, dk, dv     Tensor
}

// minBackwardItems is the number of work items below which the key blocks of
// one (batch, kv head) are split between several items. It depends on the
// shapes only, so results do not depend on the number of workers.
const minBackwardItems = 4

var bwdPool kernels.FreeList[bwdScratch]

// bwdScratch is one worker's memory in the backward pass.
type bwdScratch struct {
	kt, vt     []float32 // scaled Kᵀ and Vᵀ of the key block, D × ldt
	ps, ds     []float32 // probabilities and score gradients, mr × lds
	dk, dv     []float32 // key-block gradients, roundUp(bk, 6) × D
	qpad, dpad []float32 // padded copies of the last query block of q and dO
	di         []float32 // rowsum(dO∘O) per head of the group, padded rows
	dq         []float32 // dq accumulator per head of the group (unsplit items)
	cost       []int     // prefix sums of key-block costs (see splitRange)
	// sp holds the key span of each query row of a tile, raw and cov the
	// spans of its 6-row blocks (see blockSpans).
	sp, raw, cov []span
}

// bwdGeom holds the sizes shared by the items of one backward call.
type bwdGeom struct {
	ldt, lds, mr int // leading dims of the Kᵀ/Vᵀ tiles and P/dS, padded block rows
	tqp          int // padded rows of di and dq per head
	nkb          int // key blocks
	nsplit       int // items per (batch, kv head), at most minBackwardItems
}

func (s *bwdScratch) size(p *problem, g *bwdGeom, ownDQ bool) {
	d := p.D
	s.kt = grow(s.kt, d*g.ldt)
	s.vt = grow(s.vt, d*g.ldt)
	s.ps = grow(s.ps, g.mr*g.lds)
	s.ds = grow(s.ds, g.mr*g.lds)
	s.dk = grow(s.dk, roundUp(p.bk, microM)*d)
	s.dv = grow(s.dv, roundUp(p.bk, microM)*d)
	s.qpad = grow(s.qpad, g.mr*d)
	s.dpad = grow(s.dpad, g.mr*d)
	s.di = grow(s.di, p.G*g.tqp)
	s.sp = grow(s.sp, g.mr)
	s.raw = grow(s.raw, g.mr/microM)
	s.cov = grow(s.cov, g.mr/microM)
	if ownDQ {
		s.dq = grow(s.dq, p.G*g.tqp*d)
	}
}

// run runs the backward pass on validated arguments.
func (j *bwdJob) run() {
	p, g := &j.p, &j.g
	if p.B*p.KVH == 0 || p.Tk == 0 && p.Tq == 0 {
		return
	}
	pairs := p.B * p.KVH
	if pairs < minBackwardItems {
		// Few (batch, kv head) pairs, e.g. one sequence of a GQA model:
		// key blocks small enough that each pair's keys split into the
		// items below (one 256-key block of T=256 would leave a core idle).
		want := (minBackwardItems + pairs - 1) / pairs
		p.bk = min(p.bk, max(roundUp((p.Tk+want-1)/want, microN), microN))
	}
	*g = bwdGeom{
		ldt: roundUp(p.bk, microN),
		lds: roundUp(p.bk, microN) + 8, // room for 6-row reads of Pᵀ past bc
		mr:  roundUp(p.bq, microM),
		tqp: p.Tq + microM,
		nkb: (p.Tk + p.bk - 1) / p.bk,
	}
	g.nsplit = 1
	if pairs < minBackwardItems && g.nkb > 1 {
		g.nsplit = min((minBackwardItems+pairs-1)/pairs, g.nkb)
	}
	j.partLen = p.G * g.tqp * p.D
	if g.nsplit > 1 {
		parts := kernels.GetFloats(pairs * g.nsplit * j.partLen)
		defer kernels.PutFloats(parts)
		j.parts = *parts
	}
	nitems := pairs * g.nsplit
	j.scratch = resizeScratch(j.scratch, min(p.workers, nitems))
	kernels.For(p.workers, nitems, j)
	for w, s := range j.scratch {
		if s != nil {
			bwdPool.Put(s)
			j.scratch[w] = nil
		}
	}
	if g.nsplit > 1 {
		// Sum the partial dq of each (batch, kv head) in split order.
		kernels.For(p.workers, pairs, (*bwdMerge)(j))
	}
}

// Item runs work item it: all or a split of the key blocks of one
// (batch, kv head).
func (j *bwdJob) Item(w, it int) {
	p, g := &j.p, &j.g
	s := j.scratch[w]
	if s == nil {
		s = bwdPool.Get()
		s.size(p, g, g.nsplit == 1)
		j.scratch[w] = s
	}
	pair, split := it/g.nsplit, it%g.nsplit
	b, kh := pair/p.KVH, pair%p.KVH
	kb0, kb1 := 0, g.nkb
	dqAcc := s.dq
	if g.nsplit > 1 {
		kb0, kb1 = splitRange(p, g, s, b, split)
		dqAcc = j.parts[it*j.partLen : (it+1)*j.partLen]
	}
	backwardItem(p, g, s, &j.a, b, kh, kb0, kb1, dqAcc)
	if g.nsplit == 1 {
		writeDQ(p, g, j.a.dq, b, kh, [][]float32{dqAcc})
	}
}

// Item writes the dq of (batch, kv head) pair from its partial sums.
func (j *bwdMerge) Item(_, pair int) {
	p, g := &j.p, &j.g
	var buf [minBackwardItems][]float32
	ps := buf[:g.nsplit]
	for i := range ps {
		it := pair*g.nsplit + i
		ps[i] = j.parts[it*j.partLen : (it+1)*j.partLen]
	}
	writeDQ(p, g, j.a.dq, pair/p.KVH, pair%p.KVH, ps)
}

// splitRange returns the key blocks [kb0, kb1) of one split: contiguous
// ranges with about equal numbers of (query row, key block) pairs.
func splitRange(p *problem, g *bwdGeom, s *bwdScratch, b, split int) (kb0, kb1 int) {
	s.cost = resizeInts(s.cost, g.nkb+1)
	cost := s.cost
	cost[0] = 0
	for j := 0; j < g.nkb; j++ {
		i0, i1 := p.queryRangeForKeys(b, j*p.bk, (j+1)*p.bk)
		cost[j+1] = cost[j] + (i1 - i0) + 1
	}
	total := cost[g.nkb]
	bound := func(s int) int {
		if s == g.nsplit {
			return g.nkb
		}
		return searchRows(g.nkb, func(j int) bool { return cost[j]*g.nsplit >= total*s })
	}
	return bound(split), bound(split + 1)
}

// writeDQ writes dq = scale·Σ parts for the query heads of (b, kv head kh).
func writeDQ(p *problem, g *bwdGeom, dq Tensor, b, kh int, parts [][]float32) {
	d := p.D
	scale := [1]float32{p.scale}
	for hg := 0; hg < p.G; hg++ {
		h := kh*p.G + hg
		if len(parts) == 1 {
			scaleRowsTo(dq.Data[dq.Index(b, h, 0, 0):], dq.StrideT, parts[0][hg*g.tqp*d:], d, p.Tq, d, scale[:], 0)
			continue
		}
		for i := 0; i < p.Tq; i++ {
			row := dq.Row(b, h, i)
			off := (hg*g.tqp + i) * d
			copy(row, parts[0][off:off+d])
			for _, part := range parts[1:] {
				kernels.Axpy(1, part[off:off+d], row)
			}
			kernels.Scale(p.scale, row)
		}
	}
}

// backwardItem accumulates, for key blocks [kb0, kb1) of kv head kh of
// sequence b, the gradients dK and dV of those keys (written to a.dk, a.dv)
// and the unscaled dQ contributions of the group's query heads (into dqAcc,
// G heads of g.tqp rows of D).
func backwardItem(p *problem, g *bwdGeom, s *bwdScratch, a *bwdArgs, b, kh, kb0, kb1 int, dqAcc []float32) {
	clear(dqAcc)
	// D_i = rowsum(dO∘O), zero for masked and padding rows, rounded like
	// the dP products it is subtracted from.
	di := s.di
	clear(di)
	for hg := 0; hg < p.G; hg++ {
		h := kh*p.G + hg
		lse := a.lse[(b*p.H+h)*p.Tq : (b*p.H+h+1)*p.Tq]
		kc := dotChunk(p.D)
		i := 0
		// Eight rows at a time where all eight are unmasked: one chain is
		// bound by the FMA latency, eight side by side are not.
		for ; i+8 <= p.Tq; i += 8 {
			if masked8(lse[i:]) {
				for r := i; r < i+8; r++ {
					if lse[r] != negInf {
						di[hg*g.tqp+r] = rowDot(a.dO.Row(b, h, r), a.o.Row(b, h, r), kc)
					}
				}
				continue
			}
			rowDot8(a.dO.Data[a.dO.Index(b, h, i, 0):], a.dO.StrideT, a.o.Data[a.o.Index(b, h, i, 0):], a.o.StrideT, p.D, kc,
				(*[8]float32)(di[hg*g.tqp+i:]))
		}
		for ; i < p.Tq; i++ {
			if lse[i] != negInf {
				di[hg*g.tqp+i] = rowDot(a.dO.Row(b, h, i), a.o.Row(b, h, i), kc)
			}
		}
	}
	for kb := kb0; kb < kb1; kb++ {
		j0 := kb * p.bk
		bc := min(p.bk, p.Tk-j0)
		backwardKeyBlock(p, g, s, a, b, kh, j0, bc, dqAcc)
	}
}

// backwardKeyBlock handles keys [j0, j0+bc) of kv head kh of sequence b.
func backwardKeyBlock(p *problem, g *bwdGeom, s *bwdScratch, a *bwdArgs, b, kh, j0, bc int, dqAcc []float32) {
	d := p.D
	nb := roundUp(bc, microN) // columns of the S and dS products
	mk := roundUp(bc, microM) // rows of the dK and dV products
	dk, dv := s.dk[:mk*d], s.dv[:mk*d]
	clear(dk)
	clear(dv)
	// Scaled Kᵀ and Vᵀ of the block, zero-padded to nb columns.
	kt, vt := s.kt, s.vt
	transposeRows(kt, g.ldt, a.k.Data[a.k.Index(b, kh, j0, 0):], a.k.StrideT, bc, d, p.scale)
	transposeRows(vt, g.ldt, a.v.Data[a.v.Index(b, kh, j0, 0):], a.v.StrideT, bc, d, 1)
	for x := 0; x < d; x++ {
		clear(kt[x*g.ldt+bc : x*g.ldt+nb])
		clear(vt[x*g.ldt+bc : x*g.ldt+nb])
	}
	kRows := a.k.Data[a.k.Index(b, kh, j0, 0):]
	kc := dotChunk(d)
	qi0, qi1 := p.queryRangeForKeys(b, j0, j0+bc)
	ps, ds := s.ps, s.ds
	for hg := 0; hg < p.G && qi0 < qi1; hg++ {
		h := kh*p.G + hg
		lse := a.lse[(b*p.H+h)*p.Tq : (b*p.H+h+1)*p.Tq]
		di := s.di[hg*g.tqp : (hg+1)*g.tqp]
		dqh := dqAcc[hg*g.tqp*d : (hg+1)*g.tqp*d]
		for i0 := qi0; i0 < qi1; i0 += p.bq {
			br := min(p.bq, qi1-i0)
			mr := roundUp(br, microM)
			qRows := a.q.Data[a.q.Index(b, h, i0, 0):]
			dORows := a.dO.Data[a.dO.Index(b, h, i0, 0):]
			// The products read mr rows of q and dO; past the end of the
			// sequence use zero-padded copies.
			qA, ldq := qRows, a.q.StrideT
			dA, ldd := dORows, a.dO.StrideT
			if i0+mr > p.Tq {
				qA, ldq = padRows(s.qpad, a.q, b, h, i0, br, mr), d
				dA, ldd = padRows(s.dpad, a.dO, b, h, i0, br, mr), d
			}
			sp, raw, cov := s.sp[:br], s.raw[:mr/microM], s.cov[:mr/microM]
			p.rowSpans(sp, b, i0, j0, bc)
			blockSpans(cov, raw, sp, nb)
			// P = exp(S − lse), zero outside the mask and in padding rows;
			// S only on the columns each row block sees (see blockSpans).
			gemmCover(cov, kc, d, qA, ldq, kt, g.ldt, ps, g.lds, tileSet, nil, nil)
			for r := 0; r < mr; r++ {
				if r >= br {
					clear(ps[r*g.lds : r*g.lds+nb])
					continue
				}
				row := ps[r*g.lds : r*g.lds+bc]
				lo, hi := sp[r].lo, sp[r].hi
				if lo >= hi || lse[i0+r] == negInf {
					clear(row)
					continue
				}
				kernels.ExpSubSum(row[lo:hi], row[lo:hi], lse[i0+r])
				clear(row[:lo])
				clear(row[hi:])
			}
			// dS = P ∘ (dO·Vᵀ − D) on the same columns, zero elsewhere
			// below bc (the dK products read whole 6-key blocks).
			gemmCover(cov, kc, d, dA, ldd, vt, g.ldt, ds, g.lds, tileDS, ps, di[i0:])
			for rb, c := range cov {
				for r := rb * microM; r < min(rb*microM+microM, br); r++ {
					row := ds[r*g.lds : r*g.lds+bc]
					clear(row[:min(c.lo, bc)])
					clear(row[min(c.hi, bc):])
				}
			}
			// dV += Pᵀ·dO and dK += dSᵀ·Q, each 6-key block over the rows
			// that see one of its keys [ra, rz): the other rows' P and dS
			// are zeros there.
			last := br // rows past the last that sees a key add nothing
			for last > 0 && sp[last-1].lo >= sp[last-1].hi {
				last--
			}
			ra, rz := 0, 0
			for c := 0; c < mk; c += microM {
				for ra < last && sp[ra].hi <= c {
					ra++
				}
				rz = max(rz, ra)
				for rz < last && sp[rz].lo < c+microM {
					rz++
				}
				if ra < rz {
					gemm(microM, d, rz-ra, ps[ra*g.lds+c:], 1, g.lds, dORows[ra*a.dO.StrideT:], a.dO.StrideT, dv[c*d:], d, tileAdd, nil, nil)
					gemm(microM, d, rz-ra, ds[ra*g.lds+c:], 1, g.lds, qRows[ra*a.q.StrideT:], a.q.StrideT, dk[c*d:], d, tileAdd, nil, nil)
				}
			}
			// dQ += dS·K, each row block over the keys its rows see.
			for rb, u := range raw {
				if u.lo < u.hi {
					r0 := rb * microM
					gemm(microM, d, u.hi-u.lo, ds[r0*g.lds+u.lo:], g.lds, 1, kRows[u.lo*a.k.StrideT:], a.k.StrideT, dqh[(i0+r0)*d:], d, tileAdd, nil, nil)
				}
			}
		}
	}
	scale := [1]float32{p.scale}
	scaleRowsTo(a.dk.Data[a.dk.Index(b, kh, j0, 0):], a.dk.StrideT, dk, d, bc, d, scale[:], 0)
	for c := 0; c < bc; c++ {
		copy(a.dv.Row(b, kh, j0+c), dv[c*d:(c+1)*d])
	}
}

// masked8 reports whether one of the first eight rows of lse is fully
// masked (−Inf).
func masked8(lse []float32) bool {
	for _, x := range lse[:8] {
		if x == negInf {
			return true
		}
	}
	return false
}

// padRows copies rows [i0, i0+br) of (b, h) of x into buf as an mr×D block
// with zero rows after br.
func padRows(buf []float32, x Tensor, b, h, i0, br, mr int) []float32 {
	d := x.D
	buf = buf[:mr*d]
	for r := 0; r < br; r++ {
		copy(buf[r*d:(r+1)*d], x.Row(b, h, i0+r))
	}
	clear(buf[br*d:])
	return buf
}
