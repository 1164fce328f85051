package parallel

import "math"

// Communicators move float32 words. The few float64 and 64-bit values the
// ranks exchange (a step's status, the gradient norm's block sums, the
// configuration hash) travel as typed messages encoded here, each value as
// the two words that hold its bits: the collectives that carry them only
// copy (all-gather), so every value arrives exactly.

// float64Words is a vector of float64 values in their wire form.
type float64Words []float32

func newFloat64Words(n int) float64Words { return make(float64Words, 2*n) }

func (w float64Words) set(i int, v float64) { putUint64(w[2*i:], math.Float64bits(v)) }

func (w float64Words) get(i int) float64 { return math.Float64frombits(getUint64(w[2*i:])) }

// allGatherFloat64s all-gathers vals, in which rank r owns counts[r]
// values in rank order, exactly.
func allGatherFloat64s(comm Communicator, vals []float64, counts []int) error {
	words := newFloat64Words(len(vals))
	for i, v := range vals {
		words.set(i, v)
	}
	wc := make([]int, len(counts))
	for q, c := range counts {
		wc[q] = 2 * c
	}
	if err := comm.AllGather(words, wc); err != nil {
		return err
	}
	for i := range vals {
		vals[i] = words.get(i)
	}
	return nil
}

// stepStatus is what a rank tells every other once it has computed: whether
// it failed, and its weighted share of the step's loss.
type stepStatus struct {
	failed bool
	loss   float64
}

// exchangeStatus all-gathers every rank's status.
func exchangeStatus(comm Communicator, mine stepStatus) ([]stepStatus, error) {
	n, r := comm.Size(), comm.Rank()
	msg := make([]float64, 2*n) // rank q's flag and loss at 2q and 2q+1
	if mine.failed {
		msg[2*r] = 1
	}
	msg[2*r+1] = mine.loss
	if err := allGatherFloat64s(comm, msg, fill(n, 2)); err != nil {
		return nil, err
	}
	all := make([]stepStatus, n)
	for q := range all {
		all[q] = stepStatus{failed: msg[2*q] != 0, loss: msg[2*q+1]}
	}
	return all, nil
}

// putUint64 stores v in two float32 words, bit for bit.
func putUint64(dst []float32, v uint64) {
	dst[0] = math.Float32frombits(uint32(v))
	dst[1] = math.Float32frombits(uint32(v >> 32))
}

func getUint64(src []float32) uint64 {
	return uint64(math.Float32bits(src[0])) | uint64(math.Float32bits(src[1]))<<32
}
