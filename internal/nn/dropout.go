package nn

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// DropoutSource seeds every dropout mask of a graph. A mask is a pure
// function of (Seed, Step, the op's stream, the element's index), so a run is
// reproducible from the seed and the step number alone: resuming from a
// checkpoint or splitting a batch over workers draws the same masks. The
// trainer sets Step before each forward pass; several ops share a source and
// differ by stream. Row0 is the index of the graph's first activation row
// (one row per token: sequence × T + position) within the global batch, so
// that a data-parallel worker holding sequences [s0, s1) sets Row0 = s0·T
// and draws exactly the mask one worker would draw for the whole batch.
type DropoutSource struct {
	Seed uint64
	Step uint64
	Row0 uint64
}

// DropoutMask writes the inverted-dropout mask for one stream: each element
// is 0 with probability p and 1/(1−p) otherwise. Elements are indexed from
// offset, so a caller holding rows [r0, r1) of a larger batch can draw the
// same mask as the whole batch would.
func DropoutMask(mask []float32, p float32, seed, step, stream, offset uint64) error {
	d, err := newDropoutDraw(p, seed, step, stream)
	if err != nil {
		return err
	}
	keep := 1 / (1 - p)
	for i := range mask {
		if d.dropped(uint64(i) + offset) {
			mask[i] = 0
		} else {
			mask[i] = keep
		}
	}
	return nil
}

// DropoutBits draws a mask of n elements as bits, bit i of the slice
// (bits[i/64] >> (i%64) & 1) set when element i is kept, for ops that keep
// their masks compactly (one bit per element instead of a float32). Each
// 64-bit hash of the counter decides four elements from 16 uniform bits
// each, so the dropped fraction is round(p·2¹⁶)/2¹⁶ (p within 8e-6): a
// quarter of the hashing DropoutMask does. Like DropoutMask the mask is a
// pure function of (seed, step, stream, offset+i), so a caller holding rows
// [r0, r1) of a larger batch draws that part of the batch's mask. bits must
// hold at least (n+63)/64 words; its bits past n are cleared.
func DropoutBits(bits []uint64, n int, p float32, seed, step, stream, offset uint64) error {
	d, err := newDropoutDraw(p, seed, step, stream)
	if err != nil {
		return err
	}
	words := (n + 63) / 64
	if n < 0 || len(bits) < words {
		return fmt.Errorf("nn: dropout bits: %d words for %d elements: %w", len(bits), n, ErrShape)
	}
	thr := uint64(math.Round(float64(p) * (1 << 16)))
	// kept is 1 when the 16 bits v are ≥ thr: the subtraction wraps (top
	// bit set) exactly when they are below.
	kept := func(v uint64) uint64 { return 1 ^ (v&0xffff-thr)>>63 }
	w0 := 0
	if offset&3 == 0 {
		// Every whole word comes from 16 aligned hashes (word w from
		// those of counters base + offset/4 + 16w + q, q < 16):
		// kernels.DropoutWords, vectorized where the CPU allows.
		w0 = n / 64
		kernels.DropoutWords(bits[:w0], d.base+offset>>2, uint32(thr))
	}
	for w := w0; w < words; w++ {
		i0 := w * 64
		g := offset + uint64(i0)
		var word uint64
		h := mix64(d.base+g>>2) >> (16 * (g & 3))
		for k := range min(64, n-i0) {
			if g&3 == 0 && k > 0 {
				h = mix64(d.base + g>>2)
			}
			word |= kept(h) << k
			h >>= 16
			g++
		}
		bits[w] = word
	}
	return nil
}

// dropoutDraw decides elements from a counter-based hash (splitmix64 of the
// element's coordinates): no state, any order, any split. Each element
// compares 24 uniform bits with p·2²⁴.
type dropoutDraw struct{ base, threshold uint64 }

func newDropoutDraw(p float32, seed, step, stream uint64) (dropoutDraw, error) {
	if !(p >= 0 && p < 1) {
		return dropoutDraw{}, fmt.Errorf("nn: dropout p = %v, want [0, 1): %w", p, ErrRange)
	}
	return dropoutDraw{
		base:      mix64(seed ^ mix64(step^mix64(stream+0x9e3779b97f4a7c15))),
		threshold: uint64(float64(p) * (1 << 24)),
	}, nil
}

func (d dropoutDraw) dropped(i uint64) bool { return mix64(d.base+i)>>40 < d.threshold }

func mix64(z uint64) uint64 { return kernels.SplitMix64(z) }

type dropoutOp struct {
	OpBase
	rows, cols int
	p          float32
	src        *DropoutSource
	stream     uint64
	out        OutBuf
	mask       []float32 // drawn by Do, read by the backward op of the same run
}

// Dropout adds inverted dropout with probability p to a 2-D x: during
// training each element is zeroed with probability p and the others scaled by
// 1/(1−p). Masks come from src (see DropoutSource); stream distinguishes the
// graph's dropout sites. p = 0 returns x unchanged.
func Dropout(x *G.Node, p float32, src *DropoutSource, stream uint64) (*G.Node, error) {
	const fn = "Dropout"
	s, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	if !(p >= 0 && p < 1) {
		return nil, fmt.Errorf("nn: %s: p = %v, want [0, 1): %w", fn, p, ErrRange)
	}
	if src == nil {
		return nil, fmt.Errorf("nn: %s: nil DropoutSource: %w", fn, ErrShape)
	}
	if p == 0 {
		return x, nil
	}
	op := &dropoutOp{OpBase: NewOpBase(), rows: s[0], cols: s[1], p: p, src: src, stream: stream}
	return apply(fn, op, x)
}

func (op *dropoutOp) Arity() int { return 1 }

func (op *dropoutOp) Type() hm.Type { return hm.NewFnType(matrixType, matrixType) }

func (op *dropoutOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.cols}, nil
}

func (op *dropoutOp) compute(dst []float32, in []G.Value) error {
	if err := checkArity("Dropout", len(in), 1); err != nil {
		return err
	}
	n := op.rows * op.cols
	x, err := Float32s("nn", "Dropout", "x", in[0], n, ErrShape)
	if err != nil {
		return err
	}
	if op.mask == nil {
		op.mask = make([]float32, n)
	}
	if err := DropoutMask(op.mask, op.p, op.src.Seed, op.src.Step, op.stream, op.src.Row0*uint64(op.cols)); err != nil {
		return err
	}
	for i, v := range x {
		dst[i] = v * op.mask[i]
	}
	return nil
}

// Do applies the mask into the op's own buffer.
func (op *dropoutOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.cols, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo applies the mask into prealloc.
func (op *dropoutOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "Dropout", prealloc, op.rows*op.cols, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *dropoutOp) DiffWRT(n int) []bool { return []bool{true} }

// SymDiff builds dx = dy ⊙ mask with the mask of the same run.
func (op *dropoutOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, checkArity("Dropout.SymDiff", len(inputs), 1)
	}
	n := op.rows * op.cols
	dx, err := newGrad("DropoutGrad", op.serial, inputs[0], op.rows, op.cols, func(dst []float32, in []G.Value) error {
		dy, err := Float32s("nn", "DropoutGrad", "dy", in[2], n, ErrShape)
		if err != nil {
			return err
		}
		for i, g := range dy {
			dst[i] = g * op.mask[i]
		}
		return nil
	}, inputs[0], output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

func (op *dropoutOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.Dropout#%d(%d×%d,p=%v,stream=%d)", op.serial, op.rows, op.cols, op.p, op.stream)
}

func (op *dropoutOp) Hashcode() uint32 { return OpHash(op) }

func (op *dropoutOp) String() string { return "nn.Dropout" }
