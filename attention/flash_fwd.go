package attention

import (
	"math"
	"sync"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// Forward computes attention o = softmax(scale·q·kᵀ + mask)·v with the
// FlashAttention algorithm and returns o with the log-sum-exp of every score
// row, which Backward needs. q is [B, H, Tq, D]; k and v are [B, KVH, Tk, D]
// with KVH dividing H. o is a new contiguous [B, H, Tq, D] tensor and lse a
// new slice of B·H·Tq values in [B, H, Tq] order (natural logarithm; −Inf for
// fully masked rows).
func Forward(q, k, v Tensor, opts Options) (o Tensor, lse []float32, err error) {
	if _, err = checkQKV(q, k, v); err != nil {
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
// (B·H·Tq elements). Apart from pooled scratch it allocates nothing that
// grows with the problem.
func ForwardInto(o Tensor, lse []float32, q, k, v Tensor, opts Options) error {
	p, err := checkQKV(q, k, v)
	if err != nil {
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
	flashForward(p, q, k, v, o, lse)
	return nil
}

// Pools of the forward pass: transposed keys (one buffer per call) and
// per-worker tile scratch.
var (
	keysTPool floatPool
	fwdPool   = sync.Pool{New: func() any { return new(fwdScratch) }}
)

// fwdScratch is one worker's tile memory in the forward pass.
type fwdScratch struct {
	qs   []float32 // scaled query block, mr × D
	s    []float32 // scores, then probabilities, mr × lds
	acc  []float32 // unnormalized output, mr × D
	m, l []float32 // running maximum and sum per row
}

func (s *fwdScratch) size(mr, lds, d int) {
	s.qs = grow(s.qs, mr*d)
	s.s = grow(s.s, mr*lds)
	s.acc = grow(s.acc, mr*d)
	s.m = grow(s.m, mr)
	s.l = grow(s.l, mr)
}

// keysT is the transposed key tensor: for each (b, kv head), D rows of ld
// floats holding the Tk keys' features, zero-padded so that tile products may
// read whole 16-column blocks past the last key.
type keysT struct {
	data []float32
	ld   int
}

func (kt *keysT) head(p *problem, b, kh int) []float32 {
	n := p.D * kt.ld
	off := (b*p.KVH + kh) * n
	return kt.data[off : off+n]
}

// transposeKeys fills kt from k, parallel over (b, kv head).
func transposeKeys(p *problem, k Tensor, kt *keysT) {
	parallelFor(p.workers, p.B*p.KVH, func(_, item int) {
		b, kh := item/p.KVH, item%p.KVH
		dst := kt.head(p, b, kh)
		const blk = 16
		for t0 := 0; t0 < p.Tk; t0 += blk {
			t1 := min(t0+blk, p.Tk)
			for t := t0; t < t1; t++ {
				row := k.Row(b, kh, t)
				for d, x := range row {
					dst[d*kt.ld+t] = x
				}
			}
		}
		for d := 0; d < p.D; d++ {
			clear(dst[d*kt.ld+p.Tk : (d+1)*kt.ld])
		}
	})
}

// flashForward runs the forward pass on validated arguments.
func flashForward(p *problem, q, k, v, o Tensor, lse []float32) {
	if p.B*p.H*p.Tq == 0 {
		return
	}
	kt := keysT{ld: p.Tk + microN}
	ktBuf := keysTPool.get(p.B * p.KVH * p.D * kt.ld)
	defer keysTPool.put(ktBuf)
	kt.data = *ktBuf
	transposeKeys(p, k, &kt)

	nqb := (p.Tq + p.bq - 1) / p.bq
	nbh := p.B * p.H
	mr := roundUp(p.bq, microM)
	lds := roundUp(p.bk, microN)
	scratch := make([]*fwdScratch, min(p.workers, nqb*nbh))
	// Later query blocks see more keys under a causal mask: hand them out
	// first so the queue ends with short items.
	parallelFor(p.workers, nqb*nbh, func(w, item int) {
		s := scratch[w]
		if s == nil {
			s = fwdPool.Get().(*fwdScratch)
			s.size(mr, lds, p.D)
			scratch[w] = s
		}
		qb := nqb - 1 - item/nbh
		bh := item % nbh
		forwardBlock(p, s, lds, q, &kt, v, o, lse, bh/p.H, bh%p.H, qb)
	})
	for _, s := range scratch {
		if s != nil {
			fwdPool.Put(s)
		}
	}
}

// forwardBlock computes query block qb of head h of sequence b.
func forwardBlock(p *problem, s *fwdScratch, lds int, q Tensor, kt *keysT, v, o Tensor, lse []float32, b, h, qb int) {
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
		kernels.Scale(p.scale, row)
	}
	clear(qs[br*d:])
	clear(acc)
	for r := range m {
		m[r], l[r] = negInf, 0
	}
	kth := kt.head(p, b, kh)
	for j0 := klo; j0 < khi; j0 += p.bk {
		bc := min(p.bk, khi-j0)
		// S = (scale·Q)·Kᵀ for the tile, whole 16-column blocks.
		gemm(mr, roundUp(bc, microN), d, qs, d, 1, kth[j0:], kt.ld, sc, lds, tileSet, nil, nil)
		for r := 0; r < br; r++ {
			row := sc[r*lds : r*lds+bc]
			lo, hi := p.keyRange(b, i0+r)
			lo, hi = max(lo-j0, 0), min(hi-j0, bc)
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
					alpha := float32(math.Exp(float64(mold - mnew)))
					l[r] *= alpha
					kernels.Scale(alpha, acc[r*d:(r+1)*d])
				}
				m[r] = mnew
			}
			l[r] += sum
		}
		// Rows past br hold zeros (zero query rows), so they add nothing.
		gemm(mr, d, bc, sc, lds, 1, v.Data[v.Index(b, kh, j0, 0):], v.StrideT, acc, d, tileAdd, nil, nil)
	}
	for r := 0; r < br; r++ {
		orow := o.Row(b, h, i0+r)
		if l[r] == 0 {
			clear(orow)
			lseRow[r] = negInf
			continue
		}
		copy(orow, acc[r*d:(r+1)*d])
		kernels.Scale(1/l[r], orow)
		lseRow[r] = m[r] + float32(math.Log(float64(l[r])))
	}
}
