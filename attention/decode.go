package attention

import (
	"fmt"
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// DecodeChunk is the number of cache positions one decoding work item
// covers. The key/value length is cut into chunks of this size, processed in
// parallel and merged by their log-sum-exp in chunk order, so the result
// depends on the cache length only, not on the number of workers.
const DecodeChunk = 256

// Decode computes attention for a few new query rows against a KV cache, the
// generation path of the model.
//
// The caller provides:
//   - q: [B, H, Tq, D], the queries of the Tq newest tokens of each
//     sequence (Tq is usually 1; any strides).
//   - kcache, vcache: [B, KVH, Tcap, D] views of the caches (capacity Tcap,
//     any strides, typically contiguous), where positions [0, L) are valid and
//     already include the keys and values of the Tq new tokens at positions
//     L−Tq … L−1.
//   - length: L, the same for every sequence; or, if opts.Lengths is non-nil,
//     length must be 0 and opts.Lengths[b] is sequence b's L. Tq ≤ L ≤ Tcap.
//
// Query row r sits at position L−Tq+r: with opts.Causal it sees positions
// 0 … L−Tq+r, otherwise all L (opts.Window restricts both). The result is a
// new [B, H, Tq, D] tensor equal (to rounding) to the last Tq rows of Forward
// over the first L positions.
func Decode(q, kcache, vcache Tensor, length int, opts Options) (Tensor, error) {
	var p problem
	if err := checkQKV(&p, q, kcache, vcache); err != nil {
		return Tensor{}, err
	}
	o := NewTensor(q.B, q.H, q.T, q.D)
	if err := DecodeInto(o, q, kcache, vcache, length, opts); err != nil {
		return Tensor{}, err
	}
	return o, nil
}

// DecodeInto is Decode writing into o (shaped like q, any strides). Its
// scratch and call state come from pools: once they are warm it allocates
// nothing, so generating token by token makes no garbage here.
func DecodeInto(o, q, kcache, vcache Tensor, length int, opts Options) error {
	j := decodeJobs.Get()
	defer j.free()
	p := &j.p
	if err := checkQKV(p, q, kcache, vcache); err != nil {
		return err
	}
	if opts.Lengths != nil && length != 0 {
		return fmt.Errorf("attention: decode with both a length (%d) and per-sequence lengths: %w", length, ErrOption)
	}
	if err := p.resolve(&opts, true, length); err != nil {
		return err
	}
	if err := checkSame("o", o, q); err != nil {
		return err
	}
	j.q, j.k, j.v, j.o = q, kcache, vcache, o
	j.run()
	return nil
}

// decodeGrain is the multiply-adds (query rows × cache positions × D, for
// q·k and again for p·v) that justify one more goroutine in flashDecode:
// about 20 µs of work, beyond the tens of µs a parked thread takes to wake
// on a VM. Generation on the tiny and small presets measured 1.1–1.5×
// faster decoding single-threaded than split over two cores before this.
const decodeGrain = 1 << 18

// decodeJob is the pooled state of one decoding call. Its item method
// computes one chunk; decodeMerge's merges the chunks of one kv head.
type decodeJob struct {
	p          problem
	q, k, v, o Tensor
	nchunk     int
	rows       int          // query rows per kv head: G·Tq
	stride     int          // per row: m, l, then D accumulators
	itemLen    int          // rows·stride
	parts      []float32    // per chunk: itemLen partial results
	bufs       []*[]float32 // per worker score row, from the buffer pool on first use
}

// decodeMerge is a decodeJob in its merge phase.
type decodeMerge decodeJob

var decodeJobs kernels.FreeList[decodeJob]

// free drops the job's references to the caller's data and pools it.
func (j *decodeJob) free() {
	j.q, j.k, j.v, j.o, j.parts = Tensor{}, Tensor{}, Tensor{}, Tensor{}, nil
	decodeJobs.Put(j)
}

// run runs the split-KV decoding on validated arguments.
func (j *decodeJob) run() {
	p := &j.p
	if p.B*p.H*p.Tq == 0 {
		return
	}
	lmax := 0
	for _, l := range p.lk {
		lmax = max(lmax, l)
	}
	j.nchunk = max((lmax+DecodeChunk-1)/DecodeChunk, 1)
	j.rows = p.G * p.Tq
	j.stride = p.D + 2
	j.itemLen = j.rows * j.stride
	nitems := p.B * p.KVH * j.nchunk
	parts := kernels.GetFloats(nitems * j.itemLen)
	defer kernels.PutFloats(parts)
	j.parts = *parts
	// A token's attention over a short cache is a few microseconds of work,
	// less than waking another thread costs: unless told how many workers
	// to use, split only work that pays.
	workers := p.workers
	if p.autoWorkers {
		workers = min(workers, max(1, p.B*p.H*p.Tq*lmax*p.D/decodeGrain))
	}
	j.bufs = resizeScratch(j.bufs, min(workers, nitems))
	kernels.For(workers, nitems, j)
	for w, b := range j.bufs {
		if b != nil {
			kernels.PutFloats(b)
			j.bufs[w] = nil
		}
	}
	// Merge the chunks of each (batch, kv head) in chunk order.
	kernels.For(workers, p.B*p.KVH, (*decodeMerge)(j))
}

// Item computes chunk c of the (batch, kv head) pair of work item it.
func (j *decodeJob) Item(w, it int) {
	if j.bufs[w] == nil {
		j.bufs[w] = kernels.GetFloats(DecodeChunk)
	}
	p := &j.p
	pair, c := it/j.nchunk, it%j.nchunk
	decodeChunk(p, j.q, j.k, j.v, pair/p.KVH, pair%p.KVH, c*DecodeChunk, j.parts[it*j.itemLen:(it+1)*j.itemLen], *j.bufs[w])
}

// Item merges the chunks of (batch, kv head) pair into the output rows.
func (j *decodeMerge) Item(_, pair int) {
	p := &j.p
	nchunk, itemLen, stride, parts, o := j.nchunk, j.itemLen, j.stride, j.parts, j.o
	b, kh := pair/p.KVH, pair%p.KVH
	for row := 0; row < j.rows; row++ {
		hg, r := row/p.Tq, row%p.Tq
		orow := o.Row(b, kh*p.G+hg, r)
		clear(orow)
		mx := negInf
		for c := 0; c < nchunk; c++ {
			mx = max(mx, parts[(pair*nchunk+c)*itemLen+row*stride])
		}
		if mx == negInf {
			continue
		}
		var l float32
		for c := 0; c < nchunk; c++ {
			part := parts[(pair*nchunk+c)*itemLen+row*stride:][:stride]
			if part[0] == negInf {
				continue
			}
			w := float32(math.Exp(float64(part[0] - mx)))
			l += w * part[1]
			kernels.Axpy(w, part[2:], orow)
		}
		kernels.Scale(1/l, orow)
	}
}

// decodeChunk computes, for every query row of the group of kv head kh of
// sequence b, the running maximum, sum and unnormalized output over cache
// positions [c0, c0+DecodeChunk), into part (rows × (D+2)).
func decodeChunk(p *problem, q, k, v Tensor, b, kh, c0 int, part, s []float32) {
	stride := p.D + 2
	for hg := 0; hg < p.G; hg++ {
		h := kh*p.G + hg
		for r := 0; r < p.Tq; r++ {
			out := part[(hg*p.Tq+r)*stride:][:stride]
			out[0], out[1] = negInf, 0
			acc := out[2:]
			clear(acc)
			lo, hi := p.keyRange(b, r)
			lo, hi = max(lo, c0), min(hi, c0+DecodeChunk)
			if lo >= hi {
				continue
			}
			qrow := q.Row(b, h, r)
			seg := s[:hi-lo]
			for j := range seg {
				seg[j] = p.scale * kernels.Dot(qrow, k.Row(b, kh, lo+j))
			}
			m := kernels.Max(seg)
			out[0] = m
			out[1] = kernels.ExpSubSum(seg, seg, m)
			for j, pj := range seg {
				kernels.Axpy(pj, v.Row(b, kh, lo+j), acc)
			}
		}
	}
}
