package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
)

// Sampler draws training windows from a byte corpus: each window starts at a
// position uniform in [0, len(data)−T−1) (as torch.randint in the anchor),
// its inputs are data[s:s+T] and its targets data[s+1:s+T+1]. The sequence
// of windows depends only on the data length, T and the seed, and the
// random state can be saved and restored exactly to resume training. A
// Sampler is not safe for concurrent use.
type Sampler struct {
	data    []byte
	t       int
	pcg     *rand.PCG
	in, tgt []int32 // reused by Next
}

// ErrData is wrapped by errors about the data given to the sampler.
var ErrData = errors.New("model: bad data")

// NewSampler returns a sampler of windows of T tokens over data, which it
// keeps (not copies). data must hold at least T+2 bytes, so that there is at
// least one start position.
func NewSampler(data []byte, T int, seed uint64) (*Sampler, error) {
	if T <= 0 {
		return nil, fmt.Errorf("model: sampler window %d: %w", T, ErrData)
	}
	if len(data) < T+2 {
		return nil, fmt.Errorf("model: %d bytes of data are too few for windows of %d tokens (need %d): %w", len(data), T, T+2, ErrData)
	}
	// seedMix spreads nearby seeds (0, 1, 2…) over the 128-bit PCG state.
	hi := seedMix(seed)
	lo := seedMix(hi)
	return &Sampler{data: data, t: T, pcg: rand.NewPCG(hi, lo)}, nil
}

func seedMix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// uintn returns a uniform value in [0, n) by Lemire's multiply-and-reject
// on the raw PCG output, rather than through rand.Rand, so the sequence
// depends only on PCG-DXSM (fixed by its definition) and this code.
func (s *Sampler) uintn(n uint64) uint64 {
	hi, lo := bits.Mul64(s.pcg.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(s.pcg.Uint64(), n)
		}
	}
	return hi
}

// T is the window length in tokens.
func (s *Sampler) T() int { return s.t }

// NextBatch fills inputs and targets, both of length B·T for some B ≥ 1,
// with B windows. It allocates nothing. It implements Batcher.
func (s *Sampler) NextBatch(inputs, targets []int32) error {
	if len(inputs) != len(targets) || len(inputs) == 0 || len(inputs)%s.t != 0 {
		return fmt.Errorf("model: batch buffers of %d and %d tokens for windows of %d: %w", len(inputs), len(targets), s.t, ErrData)
	}
	n := uint64(len(s.data) - s.t - 1)
	for off := 0; off < len(inputs); off += s.t {
		start := int(s.uintn(n))
		win := s.data[start : start+s.t+1]
		in, tgt := inputs[off:off+s.t], targets[off:off+s.t]
		for i := range in {
			in[i] = int32(win[i])
			tgt[i] = int32(win[i+1])
		}
	}
	return nil
}

// Next returns B windows as B·T inputs and targets in buffers the sampler
// owns and overwrites on the next call (no allocation once they have grown
// to B·T). B < 1 returns nil slices.
func (s *Sampler) Next(B int) (inputs, targets []int32) {
	if B < 1 || B > math.MaxInt/s.t {
		return nil, nil
	}
	n := B * s.t
	if cap(s.in) < n {
		s.in, s.tgt = make([]int32, n), make([]int32, n)
	}
	s.in, s.tgt = s.in[:n], s.tgt[:n]
	_ = s.NextBatch(s.in, s.tgt) // cannot fail: lengths are equal multiples of T
	return s.in, s.tgt
}

const samplerStateVersion = 1

// State returns the sampler's position in its random sequence, to be stored
// with a training checkpoint. It records the data length and T too, so that
// SetState refuses a state taken from a sampler over other data.
func (s *Sampler) State() []byte {
	pcg, _ := s.pcg.MarshalBinary() // never fails
	b := make([]byte, 0, 1+16+len(pcg))
	b = append(b, samplerStateVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s.data)))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.t))
	return append(b, pcg...)
}

// SetState restores a state returned by State of a sampler with the same
// data length and T; the windows that follow are those that followed when
// the state was taken.
func (s *Sampler) SetState(state []byte) error {
	if len(state) < 17 || state[0] != samplerStateVersion {
		return fmt.Errorf("model: sampler state of %d bytes is not a version-%d state: %w", len(state), samplerStateVersion, ErrData)
	}
	n := binary.LittleEndian.Uint64(state[1:])
	t := binary.LittleEndian.Uint64(state[9:])
	if n != uint64(len(s.data)) || t != uint64(s.t) {
		return fmt.Errorf("model: sampler state is for %d bytes in windows of %d, this sampler has %d and %d: %w", n, t, len(s.data), s.t, ErrData)
	}
	var pcg rand.PCG
	if err := pcg.UnmarshalBinary(state[17:]); err != nil {
		return fmt.Errorf("model: sampler state: %w: %w", ErrData, err)
	}
	*s.pcg = pcg
	return nil
}

// ValidationWindows returns n fixed windows of T tokens drawn from data with
// the given seed, as n·T inputs and targets: the same arguments give the
// same windows on every run, so validation losses compare across runs.
func ValidationWindows(data []byte, n, T int, seed uint64) (inputs, targets []int32, err error) {
	if n <= 0 {
		return nil, nil, fmt.Errorf("model: %d validation windows: %w", n, ErrData)
	}
	s, err := NewSampler(data, T, seed)
	if err != nil {
		return nil, nil, err
	}
	if n > math.MaxInt/T {
		return nil, nil, fmt.Errorf("model: %d windows of %d tokens overflow: %w", n, T, ErrData)
	}
	inputs, targets = make([]int32, n*T), make([]int32, n*T)
	if err := s.NextBatch(inputs, targets); err != nil {
		return nil, nil, err
	}
	return inputs, targets, nil
}

// BitsPerByte converts a mean cross-entropy in nats per byte-level token to
// bits per byte, the unit validation losses are reported in.
func BitsPerByte(nats float64) float64 { return nats / math.Ln2 }
