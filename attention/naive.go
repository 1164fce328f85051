package attention

import (
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// The naive implementation is the straightforward one: it materializes the
// whole [B, H, Tq, Tk] matrix of scores (and, in the backward pass, of
// probabilities and score gradients), one row at a time with the vector
// kernels, parallel over heads. It is the baseline of the benchmarks and the
// float32 comparison of the tests. Masked products are skipped, so it does
// the causal half of the arithmetic, but it reads and writes T² floats per
// head.

var negInf = float32(math.Inf(-1))

// NaiveBytes returns the bytes of score-sized scratch that the naive kernels
// allocate for one call: one [b, h, tq, tk] float32 matrix in the forward
// pass, two in the backward pass.
func NaiveBytes(b, h, tq, tk int, backward bool) int64 {
	n := int64(b) * int64(h) * int64(tq) * int64(tk) * 4
	if backward {
		n *= 2
	}
	return n
}

// NaiveForward computes o = softmax(scale·q·kᵀ + mask)·v and the per-row
// log-sum-exp by materializing the scores. q is [B, H, Tq, D], k and v are
// [B, KVH, Tk, D]; o is a new contiguous [B, H, Tq, D] tensor and lse a new
// [B, H, Tq] slice.
func NaiveForward(q, k, v Tensor, opts Options) (o Tensor, lse []float32, err error) {
	var p problem
	if err = checkQKV(&p, q, k, v); err != nil {
		return Tensor{}, nil, err
	}
	o = NewTensor(q.B, q.H, q.T, q.D)
	lse = make([]float32, q.B*q.H*q.T)
	if err = NaiveForwardInto(o, lse, q, k, v, opts); err != nil {
		return Tensor{}, nil, err
	}
	return o, lse, nil
}

// NaiveForwardInto is NaiveForward writing into o ([B, H, Tq, D], any
// strides) and lse (B·H·Tq elements, row-major [B, H, Tq]).
func NaiveForwardInto(o Tensor, lse []float32, q, k, v Tensor, opts Options) error {
	p := new(problem)
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
	tq, tk := p.Tq, p.Tk
	scores := make([]float32, p.B*p.H*tq*tk)
	kernels.For(p.workers, p.B*p.H, kernels.ItemFunc(func(_, item int) {
		b, h := item/p.H, item%p.H
		kh := h / p.G
		for i := 0; i < tq; i++ {
			row := scores[(item*tq+i)*tk : (item*tq+i+1)*tk]
			orow := o.Row(b, h, i)
			clear(orow)
			l, ok := naiveProbs(p, row, q.Row(b, h, i), k, b, kh, i)
			lse[item*tq+i] = l
			if !ok {
				continue
			}
			lo, hi := p.keyRange(b, i)
			for j := lo; j < hi; j++ {
				if row[j] != 0 {
					kernels.Axpy(row[j], v.Row(b, kh, j), orow)
				}
			}
		}
	}))
	return nil
}

// naiveProbs fills row (length Tk) with the softmax probabilities of query
// row i of sequence b against key head kh and returns the row's log-sum-exp.
// When every key is masked it returns a zero row, -Inf and false.
func naiveProbs(p *problem, row, qrow []float32, k Tensor, b, kh, i int) (float32, bool) {
	lo, hi := p.keyRange(b, i)
	if lo >= hi {
		clear(row)
		return negInf, false
	}
	for j := range row {
		if j < lo || j >= hi {
			row[j] = negInf
		} else {
			row[j] = p.scale * kernels.Dot(qrow, k.Row(b, kh, j))
		}
	}
	m := kernels.Max(row)
	sum := kernels.ExpSubSum(row, row, m)
	kernels.Scale(1/sum, row)
	return m + float32(math.Log(float64(sum))), true
}

// NaiveBackward returns the gradients of the attention inputs given the
// gradient dO of the output, by materializing the probabilities and their
// gradients. o is the forward output; lse is not needed by this
// implementation and may be nil (if non-nil its length is checked). dq is a
// new [B, H, Tq, D] tensor, dk and dv new [B, KVH, Tk, D] tensors.
func NaiveBackward(q, k, v, o Tensor, lse []float32, dO Tensor, opts Options) (dq, dk, dv Tensor, err error) {
	var p problem
	if err = checkQKV(&p, q, k, v); err != nil {
		return
	}
	dq = NewTensor(q.B, q.H, q.T, q.D)
	dk = NewTensor(k.B, k.H, k.T, k.D)
	dv = NewTensor(v.B, v.H, v.T, v.D)
	if err = NaiveBackwardInto(dq, dk, dv, q, k, v, o, lse, dO, opts); err != nil {
		return Tensor{}, Tensor{}, Tensor{}, err
	}
	return dq, dk, dv, nil
}

// NaiveBackwardInto is NaiveBackward writing (not adding) the gradients into
// dq, dk and dv, which may have any strides.
func NaiveBackwardInto(dq, dk, dv, q, k, v, o Tensor, lse []float32, dO Tensor, opts Options) error {
	p := new(problem)
	if err := checkQKV(p, q, k, v); err != nil {
		return err
	}
	if err := p.resolve(&opts, false, 0); err != nil {
		return err
	}
	if err := checkBackwardArgs(p, dq, dk, dv, q, k, o, dO); err != nil {
		return err
	}
	if lse != nil {
		if err := checkLSE(lse, p); err != nil {
			return err
		}
	}
	tq, tk := p.Tq, p.Tk
	probs := make([]float32, p.B*p.H*tq*tk)
	dscores := make([]float32, p.B*p.H*tq*tk)
	kernels.For(p.workers, p.B*p.KVH, kernels.ItemFunc(func(_, item int) {
		b, kh := item/p.KVH, item%p.KVH
		for j := 0; j < tk; j++ {
			clear(dk.Row(b, kh, j))
			clear(dv.Row(b, kh, j))
		}
		for h := kh * p.G; h < (kh+1)*p.G; h++ {
			bh := b*p.H + h
			for i := 0; i < tq; i++ {
				row := probs[(bh*tq+i)*tk : (bh*tq+i+1)*tk]
				drow := dscores[(bh*tq+i)*tk : (bh*tq+i+1)*tk]
				dqrow := dq.Row(b, h, i)
				clear(dqrow)
				clear(drow)
				if _, ok := naiveProbs(p, row, q.Row(b, h, i), k, b, kh, i); !ok {
					continue
				}
				dorow, qrow := dO.Row(b, h, i), q.Row(b, h, i)
				di := kernels.Dot(dorow, o.Row(b, h, i))
				lo, hi := p.keyRange(b, i)
				for j := lo; j < hi; j++ {
					if row[j] == 0 {
						continue
					}
					dp := kernels.Dot(dorow, v.Row(b, kh, j))
					drow[j] = row[j] * (dp - di)
					kernels.Axpy(row[j], dorow, dv.Row(b, kh, j))
					kernels.Axpy(p.scale*drow[j], k.Row(b, kh, j), dqrow)
					kernels.Axpy(p.scale*drow[j], qrow, dk.Row(b, kh, j))
				}
			}
		}
	}))
	return nil
}

// checkBackwardArgs validates the views of a backward call.
func checkBackwardArgs(p *problem, dq, dk, dv, q, k, o, dO Tensor) error {
	if err := checkSame("o", o, q); err != nil {
		return err
	}
	if err := checkSame("dO", dO, q); err != nil {
		return err
	}
	if err := checkSame("dq", dq, q); err != nil {
		return err
	}
	if err := checkSame("dk", dk, k); err != nil {
		return err
	}
	return checkSame("dv", dv, k)
}
