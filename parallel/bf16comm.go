package parallel

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/model"
)

// CommPrecision is the number format in which gradients travel between
// ranks (Config.CommPrecision): model.Precision, whose fp32 and bf16 are
// the formats here too.
//
// Deprecated: use model.Precision (model.PrecisionFP32, PrecisionBF16 and
// ParsePrecision); this alias keeps code written against it compiling.
type CommPrecision = model.Precision

// The communication precisions.
//
// Deprecated: use model.PrecisionFP32 and model.PrecisionBF16.
const (
	CommFP32 = model.PrecisionFP32
	CommBF16 = model.PrecisionBF16
)

// ParseCommPrecision returns the precision named s: fp32 (or float32) or
// bf16 (or bfloat16).
//
// Deprecated: use model.ParsePrecision.
func ParseCommPrecision(s string) (model.Precision, error) {
	p, err := model.ParsePrecision(s)
	if err != nil {
		return 0, fmt.Errorf("parallel: communication precision: %w", err)
	}
	return p, nil
}

// BF16Communicator is a Communicator whose reductions can move their data
// as bfloat16 (Config.CommPrecision model.PrecisionBF16 needs one). The package's
// in-process groups and MPIComm are BF16Communicators.
type BF16Communicator interface {
	Communicator
	// ReduceScatterBF16 is ReduceScatter with every rank's buf rounded to
	// bfloat16 for the transport: each rank widens the contributions to
	// its part exactly, adds them in rank order in float32 and rounds the
	// sum to bfloat16 precision (see Config.CommPrecision). Half the bytes of
	// ReduceScatter travel.
	ReduceScatterBF16(buf []float32, counts []int) error
	// AllGatherBF16 is AllGather with the parts moved as bfloat16: each
	// rank's part is rounded to bfloat16 precision in place and every rank
	// receives all parts. It is exact for parts that hold bfloat16 values
	// already, as ReduceScatterBF16 leaves them.
	AllGatherBF16(buf []float32, counts []int) error
}

// WireCounter is implemented by the package's communicators: BytesSent
// returns the payload bytes this rank has sent to other ranks through the
// communicator's collectives, whatever the algorithm that carries them. A
// reduce-scatter sends every part but the rank's own, an all-gather sends
// the rank's part to every other rank, an all-reduce is a reduce-scatter
// followed by an all-gather, and a broadcast sends the root's buffer to
// every other rank; float32 elements count 4 bytes, bfloat16 elements 2.
type WireCounter interface {
	BytesSent() int64
}

// reduceScatterBytes is what a reduce-scatter sends from rank r.
func reduceScatterBytes(counts []int, r, elem int) int64 {
	var n int
	for q, c := range counts {
		if q != r {
			n += c
		}
	}
	return int64(n) * int64(elem)
}

// allGatherBytes is what an all-gather sends from rank r.
func allGatherBytes(counts []int, r, elem int) int64 {
	return int64(counts[r]) * int64(len(counts)-1) * int64(elem)
}

// bf16Words returns a float32 buffer able to hold n bfloat16 values (two
// per word), reusing *scratch, and the bfloat16 view of it. In-process
// collectives post such words, so that the other ranks read bfloat16 data
// through the ordinary float32 plumbing.
func bf16Words(scratch *[]float32, n int) ([]float32, []uint16) {
	words := (n + 1) / 2
	if cap(*scratch) < words {
		*scratch = make([]float32, words)
	}
	w := (*scratch)[:words]
	return w, bf16View(w, n)
}

// bf16View is the bfloat16 view of n values held in words (bf16Words).
func bf16View(words []float32, n int) []uint16 {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&words[0])), n)
}

// sumBF16Into writes, for every j in [lo, hi), dst[j−lo] = the bfloat16
// rounding of srcs[0][j] + srcs[1][j] + … widened to float32 and added in
// order in float32 (the reduction of model.PrecisionBF16).
func sumBF16Into(dst []float32, srcs [][]uint16, lo, hi int) {
	const block = 1024
	var acc, tmp [block]float32
	var out [block]uint16
	for b := lo; b < hi; b += block {
		e := min(b+block, hi)
		a, x := acc[:e-b], tmp[:e-b]
		kernels.FromBF16(a, srcs[0][b:e])
		for q := 1; q < len(srcs); q++ {
			kernels.FromBF16(x, srcs[q][b:e])
			for i := range a {
				a[i] += x[i]
			}
		}
		kernels.ToBF16(out[:e-b], a)
		kernels.FromBF16(dst[b-lo:e-lo], out[:e-b])
	}
}

// ReduceScatterBF16: see BF16Communicator. Every rank posts its whole
// buffer rounded to bfloat16; the owner of each part widens and sums it.
func (c *inProc) ReduceScatterBF16(buf []float32, counts []int) error {
	offs, err := checkCounts("bf16 reduce-scatter", counts, c.g.n, len(buf))
	if err != nil {
		return err
	}
	words, mine := bf16Words(&c.scratch, len(buf))
	kernels.ToBF16(mine, buf)
	if err := c.post("bf16 reduce-scatter", words, counts, -1); err != nil {
		return err
	}
	srcs := c.srcs[:0]
	for q := range c.g.n {
		srcs = append(srcs, bf16View(c.g.bufs[q], len(buf)))
	}
	c.srcs = srcs
	lo, hi := offs[c.rank], offs[c.rank+1]
	sumBF16Into(buf[lo:hi], srcs, lo, hi)
	c.sent.Add(reduceScatterBytes(counts, c.rank, 2))
	return c.g.barrier()
}

// AllGatherBF16: see BF16Communicator.
func (c *inProc) AllGatherBF16(buf []float32, counts []int) error {
	offs, err := checkCounts("bf16 all-gather", counts, c.g.n, len(buf))
	if err != nil {
		return err
	}
	words, mine := bf16Words(&c.scratch, len(buf))
	lo, hi := offs[c.rank], offs[c.rank+1]
	kernels.ToBF16(mine[lo:hi], buf[lo:hi])
	if err := c.post("bf16 all-gather", words, counts, -1); err != nil {
		return err
	}
	for q := range c.g.n {
		kernels.FromBF16(buf[offs[q]:offs[q+1]], bf16View(c.g.bufs[q], len(buf))[offs[q]:offs[q+1]])
	}
	c.sent.Add(allGatherBytes(counts, c.rank, 2))
	return c.g.barrier()
}

// BytesSent: see WireCounter.
func (c *inProc) BytesSent() int64 { return c.sent.Load() }

var _ BF16Communicator = (*inProc)(nil)

// checkCommPrecision validates cfg.CommPrecision for comm (nil under New,
// whose workers' group supports every precision).
func checkCommPrecision(cfg *Config, comm Communicator) error {
	switch cfg.CommPrecision {
	case model.PrecisionFP32:
		return nil
	case model.PrecisionBF16:
		if comm == nil {
			return nil
		}
		if _, ok := comm.(BF16Communicator); !ok {
			return fmt.Errorf("parallel: config: communication precision bf16 needs a BF16Communicator; %T is not one", comm)
		}
		return nil
	}
	return fmt.Errorf("parallel: config: communication precision %v (want fp32 or bf16)", cfg.CommPrecision)
}

// errNoBF16 is returned if a communicator lost its bf16 collectives after
// the configuration was checked (a wrapper replaced it).
var errNoBF16 = errors.New("parallel: communicator has no bfloat16 collectives")

// reduceScatterGrad reduce-scatters one bucket of gradients in the run's
// communication precision.
func (t *Trainer) reduceScatterGrad(w *worker, buf []float32, counts []int) error {
	if t.cfg.CommPrecision == model.PrecisionBF16 {
		c, ok := w.comm.(BF16Communicator)
		if !ok {
			return errNoBF16
		}
		return c.ReduceScatterBF16(buf, counts)
	}
	return w.comm.ReduceScatter(buf, counts)
}

// allReduceGrad all-reduces one bucket of gradients (stage 0) in the run's
// communication precision: a reduce-scatter over even parts followed by an
// all-gather, both in bfloat16 under model.PrecisionBF16, whose reduced parts are
// bfloat16 values, so the all-gather moves them exactly.
func (t *Trainer) allReduceGrad(w *worker, buf []float32) error {
	if t.cfg.CommPrecision == model.PrecisionBF16 {
		c, ok := w.comm.(BF16Communicator)
		if !ok {
			return errNoBF16
		}
		counts := evenCounts(len(buf), c.Size())
		if err := c.ReduceScatterBF16(buf, counts); err != nil {
			return err
		}
		return c.AllGatherBF16(buf, counts)
	}
	return w.comm.AllReduce(buf)
}

// BytesSent returns the payload bytes this trainer's ranks have sent through
// their communicators (WireCounter; under New the sum over the workers,
// since the group the trainer last built after a failed step), or −1 when a
// communicator does not count them.
func (t *Trainer) BytesSent() int64 {
	var n int64
	for _, w := range t.workers {
		c, ok := w.comm.(WireCounter)
		if !ok {
			return -1
		}
		n += c.BytesSent()
	}
	return n
}

// sampleWords is the length of the float32 buffer in which Exact keeps one
// sample's gradient of n elements: n, or n/2 rounded up under model.PrecisionBF16,
// whose samples are kept as bfloat16, two to a word.
func (t *Trainer) sampleWords(n int) int {
	if t.cfg.CommPrecision == model.PrecisionBF16 {
		return (n + 1) / 2
	}
	return n
}

// keepSample stores one sample's gradient into dst (sampleWords long).
func (t *Trainer) keepSample(dst, grad []float32) {
	if t.cfg.CommPrecision == model.PrecisionBF16 {
		kernels.ToBF16(bf16View(dst, len(grad)), grad)
		return
	}
	copy(dst, grad)
}

// sumSamples writes into dst[lo:hi] the sum of the kept sample gradients in
// order: float32 sums of the samples, or of their bfloat16 values rounded
// to bfloat16 once at the end under model.PrecisionBF16 (as ReduceScatterBF16 does
// with the ranks' gradients).
func (t *Trainer) sumSamples(dst []float32, samples [][]float32, lo, hi int) {
	if t.cfg.CommPrecision != model.PrecisionBF16 {
		sumInto(dst, samples, lo, hi)
		return
	}
	srcs := make([][]uint16, len(samples))
	for i, s := range samples {
		srcs[i] = bf16View(s, len(dst))
	}
	sumBF16Into(dst[lo:hi], srcs, lo, hi)
}
