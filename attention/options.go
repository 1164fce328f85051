package attention

import (
	"fmt"
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// Default tile sizes of the FlashAttention kernels, chosen by
// BenchmarkTileSweep on the target machine (2-core AMD EPYC Zen 4, 32 KiB
// L1d and 1 MiB L2 per core) at T=4096, B=1, H=4, causal, for tiles of
// 48…192 query rows × 32…256 keys. Measured 2026-11-25 (CPU ms per call):
//
//	             D=64 fwd  D=64 fwd+bwd  D=128 fwd  D=128 fwd+bwd
//	96×128         117         362          205         740
//	best tile   111 64×256  362 96×128   199 48×256  715 192×256
//	worst tile  195 128×256 475 128×32   278 192×32  903 128×32
//
// 96×128 was the fastest for forward+backward at D=64 (the training case)
// and within 5% of the best elsewhere; narrow key tiles (32) cost 15–30%:
// every tile pays the per-row softmax rescaling, so wider key tiles
// amortize it. Since the products skip the masked 6×16 blocks of diagonal
// tiles (spans.go), a wide key tile no longer computes a wide masked
// triangle, and 96×256 is the faster tile. Remeasured 2026-12-03, CPU ms
// per call, two runs each (BenchmarkTileSweep; BenchmarkPresetTiles for
// the last two columns):
//
//	                   D=64 fwd   D=64 fwd+bwd  D=128 fwd+bwd  small  SmolLM2
//	96×128            110.6–110.9  352–364       722–742       16.0    15.3
//	96×256            106.1–108.3  343–352       681–688       15.3    14.7
//
// (small: B=8 H=8 T=256 D=32; SmolLM2-135M: B=4 H=9 KVH=3 T=256 D=64,
// causal.) At D=64 a 96×256 tile keeps Q (24 KiB), K and V (64 KiB each),
// the scores (96 KiB) and the accumulator (24 KiB) in the 1 MiB L2, with
// one key tile's rows streaming through L1. 96 query rows are a multiple
// of the 6-row register block.
const (
	DefaultBlockQ = 96
	DefaultBlockK = 256
)

// Options configures the attention kernels. The zero value is plain,
// unmasked attention with scale 1/√D on all cores.
type Options struct {
	// Scale multiplies the scores q·k before the softmax. Zero selects
	// 1/√D. It must be finite.
	Scale float32

	// Causal masks keys after the query's position. Query row i of a tensor
	// with Tq rows against Tk keys sits at position i + Tk − Tq (the query
	// rows are the last Tq positions), which is position i for self-attention.
	Causal bool

	// Window, if positive, limits each query to keys less than Window
	// positions away: keys at positions p−Window+1 … p for a query at
	// position p when Causal is set, p−Window+1 … p+Window−1 otherwise.
	Window int

	// Lengths, if non-nil, holds the valid length of each sequence of a
	// padded batch (len(Lengths) == B). In Forward and Backward the queries
	// and keys must have the same length T; keys at positions ≥ Lengths[b] are
	// masked and query rows ≥ Lengths[b] are padding: their output is zero,
	// their log-sum-exp −Inf and their gradients zero. In Decode, Lengths[b]
	// is the number of valid cache positions of sequence b (see Decode).
	Lengths []int

	// BlockQ and BlockK are the tile sizes of the FlashAttention kernels
	// (query rows and key columns per tile). Zero selects DefaultBlockQ and
	// DefaultBlockK. Any positive value is correct; multiples of 6 (BlockQ)
	// and of 16 (BlockK) use the register-blocked kernels fully.
	BlockQ, BlockK int

	// Workers is the number of goroutines; zero selects GOMAXPROCS, or the
	// process-wide cap of parallel.LimitKernelThreads if lower (data-parallel
	// workers keep to one core each).
	// Results do not depend on it.
	Workers int
}

// problem is a validated attention call: shapes, resolved options and the
// per-sequence geometry of the mask.
type problem struct {
	B, H, KVH, G int // batch, query heads, key/value heads, H/KVH
	Tq, Tk, D    int
	scale        float32
	causal       bool
	window       int
	bq, bk       int
	workers      int
	autoWorkers  bool // workers was not given: kernels may use fewer on small work
	// Per sequence: keys [0, lk) exist, query row i sits at position
	// i + qoff, and rows ≥ qvalid are padding.
	lk, qoff, qvalid []int
}

// resolve fills in defaults and checks the options for a problem whose
// shapes are already set. lengths semantics depend on decode.
func (p *problem) resolve(opts *Options, decode bool, length int) error {
	if opts.Scale != opts.Scale || math.IsInf(float64(opts.Scale), 0) {
		return fmt.Errorf("attention: scale %v: %w", opts.Scale, ErrOption)
	}
	p.scale = opts.Scale
	if p.scale == 0 {
		p.scale = float32(1 / math.Sqrt(float64(p.D)))
	}
	if opts.Window < 0 {
		return fmt.Errorf("attention: window %d: %w", opts.Window, ErrOption)
	}
	if opts.BlockQ < 0 || opts.BlockK < 0 {
		return fmt.Errorf("attention: block sizes %d×%d: %w", opts.BlockQ, opts.BlockK, ErrOption)
	}
	if opts.Workers < 0 {
		return fmt.Errorf("attention: %d workers: %w", opts.Workers, ErrOption)
	}
	p.causal, p.window = opts.Causal, opts.Window
	p.bq, p.bk = opts.BlockQ, opts.BlockK
	if p.bq == 0 {
		p.bq = DefaultBlockQ
	}
	if p.bk == 0 {
		p.bk = DefaultBlockK
	}
	p.workers = opts.Workers
	if p.workers == 0 {
		p.workers = kernels.Threads()
		p.autoWorkers = true
	}
	p.lk = resizeInts(p.lk, p.B)
	p.qoff = resizeInts(p.qoff, p.B)
	p.qvalid = resizeInts(p.qvalid, p.B)
	if opts.Lengths != nil && len(opts.Lengths) != p.B {
		return fmt.Errorf("attention: %d lengths for a batch of %d: %w", len(opts.Lengths), p.B, ErrShape)
	}
	for b := 0; b < p.B; b++ {
		switch {
		case decode:
			l := length
			if opts.Lengths != nil {
				l = opts.Lengths[b]
			}
			if l < p.Tq || l > p.Tk {
				return fmt.Errorf("attention: sequence %d: cache length %d for %d new rows and capacity %d: %w", b, l, p.Tq, p.Tk, ErrShape)
			}
			p.lk[b], p.qoff[b], p.qvalid[b] = l, l-p.Tq, p.Tq
		case opts.Lengths != nil:
			if p.Tq != p.Tk {
				return fmt.Errorf("attention: lengths need equal query and key lengths, have %d and %d: %w", p.Tq, p.Tk, ErrShape)
			}
			l := opts.Lengths[b]
			if l < 0 || l > p.Tk {
				return fmt.Errorf("attention: sequence %d: length %d outside [0, %d]: %w", b, l, p.Tk, ErrShape)
			}
			p.lk[b], p.qoff[b], p.qvalid[b] = l, 0, l
		default:
			p.lk[b], p.qoff[b], p.qvalid[b] = p.Tk, p.Tk-p.Tq, p.Tq
		}
	}
	return nil
}

// keyRange returns the keys [lo, hi) visible to query row i of sequence b;
// lo >= hi means the row is fully masked.
func (p *problem) keyRange(b, i int) (lo, hi int) {
	if i >= p.qvalid[b] {
		return 0, 0
	}
	pos := i + p.qoff[b]
	lo, hi = 0, p.lk[b]
	if p.causal && pos+1 < hi {
		hi = pos + 1
	}
	if p.window > 0 {
		if l := pos - p.window + 1; l > lo {
			lo = l
		}
		if !p.causal && pos+p.window < hi {
			hi = pos + p.window
		}
	}
	if lo >= hi {
		return 0, 0
	}
	return lo, hi
}

// blockKeyRange returns the union [lo, hi) of the key ranges of query rows
// [i0, i1) of sequence b (both ends are monotone in the row). It returns
// lo >= hi when every row is masked.
func (p *problem) blockKeyRange(b, i0, i1 int) (lo, hi int) {
	if i1 > p.qvalid[b] {
		i1 = p.qvalid[b]
	}
	if i0 >= i1 {
		return 0, 0
	}
	// Only leading rows can be empty (causal rows before the first key);
	// their (0, 0) keeps both ends monotone.
	lo, _ = p.keyRange(b, i0)
	_, hi = p.keyRange(b, i1-1)
	return lo, hi
}

// queryRangeForKeys returns the query rows [i0, i1) of sequence b that see at
// least one key of [j0, j1).
func (p *problem) queryRangeForKeys(b, j0, j1 int) (i0, i1 int) {
	if j1 > p.lk[b] {
		j1 = p.lk[b]
	}
	n := p.qvalid[b]
	if j0 >= j1 || n == 0 {
		return 0, 0
	}
	// Row i sees [lo(i), hi(i)) with lo and hi non-decreasing in i, so the
	// rows meeting [j0, j1) form one interval: the first with hi > j0 and the
	// first with lo >= j1.
	first := searchRows(n, func(i int) bool { _, hi := p.keyRange(b, i); return hi > j0 })
	end := searchRows(n, func(i int) bool { lo, _ := p.keyRange(b, i); return lo >= j1 })
	for first < end {
		if lo, hi := p.keyRange(b, first); lo < hi {
			break
		}
		first++
	}
	if first >= end {
		return 0, 0
	}
	return first, end
}

// searchRows returns the smallest i in [0, n) with f(i) true, or n; f must be
// monotone.
func searchRows(n int, f func(int) bool) int {
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !f(m) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// resizeInts returns s resliced to n elements, reallocated if its capacity
// is too small. The contents are arbitrary.
func resizeInts(s []int, n int) []int {
	if cap(s) < n {
		return make([]int, n)
	}
	return s[:n]
}

// checkQKV validates q, k, v and resets p to their shapes, keeping only the
// capacity of its per-sequence slices (p may come from a pool).
func checkQKV(p *problem, q, k, v Tensor) error {
	for _, x := range []struct {
		name string
		t    Tensor
	}{{"q", q}, {"k", k}, {"v", v}} {
		if err := x.t.Validate(); err != nil {
			return fmt.Errorf("attention: %s: %w", x.name, err)
		}
	}
	if q.B != k.B || q.B != v.B {
		return fmt.Errorf("attention: batch sizes q %d, k %d, v %d differ: %w", q.B, k.B, v.B, ErrShape)
	}
	if q.D != k.D || q.D != v.D || q.D <= 0 {
		return fmt.Errorf("attention: head dims q %d, k %d, v %d: %w", q.D, k.D, v.D, ErrShape)
	}
	if k.H != v.H || k.T != v.T {
		return fmt.Errorf("attention: k %s and v %s differ: %w", k.shapeString(), v.shapeString(), ErrShape)
	}
	if k.H <= 0 || q.H%k.H != 0 {
		return fmt.Errorf("attention: %d key/value heads do not divide %d query heads: %w", k.H, q.H, ErrShape)
	}
	*p = problem{B: q.B, H: q.H, KVH: k.H, G: q.H / k.H, Tq: q.T, Tk: k.T, D: q.D,
		lk: p.lk[:0], qoff: p.qoff[:0], qvalid: p.qvalid[:0]}
	return nil
}

// checkSame validates an output or gradient view against the shape of ref.
func checkSame(name string, x, ref Tensor) error {
	if err := x.Validate(); err != nil {
		return fmt.Errorf("attention: %s: %w", name, err)
	}
	if x.B != ref.B || x.H != ref.H || x.T != ref.T || x.D != ref.D {
		return fmt.Errorf("attention: %s is %s, want %s: %w", name, x.shapeString(), ref.shapeString(), ErrShape)
	}
	return nil
}

// checkLSE validates the log-sum-exp slice of a problem.
func checkLSE(lse []float32, p *problem) error {
	if len(lse) != p.B*p.H*p.Tq {
		return fmt.Errorf("attention: lse has %d elements, want B·H·T = %d: %w", len(lse), p.B*p.H*p.Tq, ErrShape)
	}
	return nil
}
