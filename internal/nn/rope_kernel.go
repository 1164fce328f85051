package nn

import (
	"fmt"
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// RopeScaling selects how RopeFreqs stretches the rotary frequencies for
// contexts longer than pretraining's, as Hugging Face's rope_scaling
// (rope_parameters) does. A nil *RopeScaling is no scaling.
type RopeScaling struct {
	// Type is "linear" (every inverse frequency divided by Factor, i.e.
	// positions divided by Factor) or "llama3" (Llama 3.1's wavelength-based
	// smoothing).
	Type string
	// Factor is the stretch of the context, > 0.
	Factor float64
	// LowFreqFactor and HighFreqFactor (llama3 only) bound the wavelengths
	// that are kept (below OriginalMaxPositions/HighFreqFactor), divided by
	// Factor (above OriginalMaxPositions/LowFreqFactor), or interpolated
	// between the two; HighFreqFactor > LowFreqFactor > 0.
	LowFreqFactor, HighFreqFactor float64
	// OriginalMaxPositions (llama3 only) is the pretraining context length,
	// > 0.
	OriginalMaxPositions int
}

// RopeFreqs returns the headDim/2 inverse frequencies of rotary position
// embeddings with base theta: inv_freq[i] = 1/theta^(2i/headDim), then
// scaled as scaling says (nil: unscaled). It follows transformers'
// _compute_default_rope_parameters, _compute_linear_scaling_rope_parameters
// and _compute_llama3_parameters (modeling_rope_utils.py), in float32 as
// they are, so that TestRopeFreqsMatchTorch's golden values from
// testdata/rope_freqs.py hold to float32 rounding. headDim must be even and
// positive, theta finite and > 0; an unknown scaling type is an error naming
// the supported ones.
func RopeFreqs(headDim int, theta float64, scaling *RopeScaling) ([]float32, error) {
	const fn = "RopeFreqs"
	if headDim <= 0 || headDim%2 != 0 {
		return nil, shapeErr(fn, "head_dim %d must be even and positive", headDim)
	}
	if !(theta > 0) || math.IsInf(theta, 0) {
		return nil, fmt.Errorf("nn: %s: rope_theta %g must be finite and positive: %w", fn, theta, ErrRange)
	}
	half := headDim / 2
	inv := make([]float32, half)
	for i := range inv {
		// torch: arange(0, dim, 2).float() / dim, base ** that (base taken
		// as float32), 1.0 / that, each rounded to float32.
		e := float32(2*i) / float32(headDim)
		p := float32(math.Pow(float64(float32(theta)), float64(e)))
		inv[i] = 1 / p
	}
	if scaling == nil {
		return inv, nil
	}
	s := *scaling
	if !(s.Factor > 0) || math.IsInf(s.Factor, 0) {
		return nil, fmt.Errorf("nn: %s: rope_scaling %q: factor %g must be finite and positive: %w", fn, s.Type, s.Factor, ErrRange)
	}
	switch s.Type {
	case "linear":
		f := float32(s.Factor)
		for i := range inv {
			inv[i] /= f
		}
	case "llama3":
		if !(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor) || math.IsInf(s.HighFreqFactor, 0) {
			return nil, fmt.Errorf("nn: %s: rope_scaling llama3: need 0 < low_freq_factor (%g) < high_freq_factor (%g): %w", fn, s.LowFreqFactor, s.HighFreqFactor, ErrRange)
		}
		if s.OriginalMaxPositions <= 0 {
			return nil, fmt.Errorf("nn: %s: rope_scaling llama3: original_max_position_embeddings %d must be positive: %w", fn, s.OriginalMaxPositions, ErrRange)
		}
		llama3Freqs(inv, s)
	default:
		return nil, fmt.Errorf("nn: %s: rope_scaling type %q not supported (supported: none, \"linear\", \"llama3\"): %w", fn, s.Type, ErrRange)
	}
	return inv, nil
}

// llama3Freqs applies _compute_llama3_parameters to inv in place: the
// scalars (wavelength bounds) in float64 as Python computes them, the
// per-frequency tensors in float32 as torch does.
func llama3Freqs(inv []float32, s RopeScaling) {
	old := float64(s.OriginalMaxPositions)
	lowWavelen := float32(old / s.LowFreqFactor)
	highWavelen := float32(old / s.HighFreqFactor)
	factor := float32(s.Factor)
	lowF, span := float32(s.LowFreqFactor), float32(s.HighFreqFactor-s.LowFreqFactor)
	for i, f := range inv {
		wavelen := float32(2*math.Pi) / f
		scaled := f
		if wavelen > lowWavelen {
			scaled = f / factor
		}
		if !(wavelen < highWavelen) && !(wavelen > lowWavelen) {
			smooth := (float32(old)/wavelen - lowF) / span
			scaled = (1-smooth)*scaled/factor + smooth*scaled
		}
		inv[i] = scaled
	}
}

// ropeBlock bounds the stack scratch of cosines and sines per row, so the
// kernels never allocate; larger head dimensions go in blocks of
// frequencies.
const ropeBlock = 128

func checkRope(fn string, nx, ny, width, heads, headDim int, positions []int32, invFreq []float32) error {
	if headDim <= 0 || headDim%2 != 0 {
		return shapeErr(fn, "head_dim %d must be even and positive", headDim)
	}
	if heads < 0 || width <= 0 || heads*headDim > width {
		return shapeErr(fn, "%d heads of %d do not fit in rows of width %d", heads, headDim, width)
	}
	n, err := rowsOf(fn, "x", nx, width)
	if err != nil {
		return err
	}
	if err := checkLen(fn, "y", ny, nx); err != nil {
		return err
	}
	if err := checkLen(fn, "positions", len(positions), n); err != nil {
		return err
	}
	if err := checkLen(fn, "invFreq", len(invFreq), headDim/2); err != nil {
		return err
	}
	for i, p := range positions {
		if p < 0 {
			return fmt.Errorf("nn: %s: positions[%d]=%d is negative: %w", fn, i, p, ErrRange)
		}
	}
	return nil
}

// RopeForward applies rotary position embeddings in Hugging Face's
// rotate-half convention to x [rows, width]: in each row, each of the first
// heads blocks of headDim columns is rotated by its row's position,
// x' = x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁] (x₁ and x₂
// the two halves of the head) and angle positions[row]·invFreq[i] for both
// x₁[i] and x₂[i]. Columns past heads·headDim are copied unchanged, so a
// packed [q | k | v] row is rotated by passing the number of q and k heads
// (q's heads first, then k's). invFreq comes from RopeFreqs; positions [rows]
// are absolute, so decoding with a KV cache passes the cache offset plus t.
// y may alias x.
func RopeForward(y, x []float32, width, heads, headDim int, positions []int32, invFreq []float32) error {
	if err := checkRope("RopeForward", len(x), len(y), width, heads, headDim, positions, invFreq); err != nil {
		return err
	}
	rope(y, x, width, heads, headDim, positions, invFreq, 1, false)
	return nil
}

// RopeBackward accumulates the gradient of RopeForward: dx += R(−angle)·dy
// on the rotated heads (the rotation is orthogonal, its transpose is the
// inverse rotation) and dx += dy on the other columns.
func RopeBackward(dx, dy []float32, width, heads, headDim int, positions []int32, invFreq []float32) error {
	if err := checkRope("RopeBackward", len(dy), len(dx), width, heads, headDim, positions, invFreq); err != nil {
		return err
	}
	rope(dx, dy, width, heads, headDim, positions, invFreq, -1, true)
	return nil
}

// RopeInverse writes into y the inverse of RopeForward (the rotation by
// −angle), with the same arguments: applied to a gradient it gives the
// gradient before the rotation, which is how an op that rotates its input
// internally turns its dq and dk back. y may alias x.
func RopeInverse(y, x []float32, width, heads, headDim int, positions []int32, invFreq []float32) error {
	if err := checkRope("RopeInverse", len(x), len(y), width, heads, headDim, positions, invFreq); err != nil {
		return err
	}
	rope(y, x, width, heads, headDim, positions, invFreq, -1, false)
	return nil
}

// rope writes (acc false) or adds (acc true) the rotation of x by sign·angle
// into y.
func rope(y, x []float32, width, heads, headDim int, positions []int32, invFreq []float32, sign float32, acc bool) {
	b := ropeBody{y: y, x: x, invFreq: invFreq, positions: positions, width: width, heads: heads, headDim: headDim, acc: acc, sign: sign}
	rows := len(x) / max(width, 1)
	// A batch of B sequences holds each position B times: when the rows'
	// positions span fewer values than there are rows, their cosines and
	// sines are computed once per position into a table (the same float32
	// values as per row) instead of once per row. A training step of B = 4
	// has a quarter of the sincos calls.
	var tab *[]float32
	if rows > 1 {
		lo, hi := positions[0], positions[0]
		for _, p := range positions[1:] {
			lo, hi = min(lo, p), max(hi, p)
		}
		half := headDim / 2
		if span := int(hi-lo) + 1; span < rows && span*half <= ropeTableMax {
			tab = kernels.GetFloats(2 * span * half)
			b.table, b.tableLo = *tab, lo
			cs, sn := b.table[:span*half], b.table[span*half:]
			for p := range span {
				ropeAngles(cs[p*half:(p+1)*half], sn[p*half:(p+1)*half], float32(int(lo)+p), invFreq, sign)
			}
		}
	}
	ropeLoops.Run(0, b, rows, rowGrain(width))
	kernels.PutFloats(tab)
}

// ropeTableMax bounds rope's table of cosines (and as many sines), in
// floats per kind: 1 MiB each.
const ropeTableMax = 1 << 18

// ropeAngles writes the cosines and sign·sines of pos·invFreq[i]: torch's
// position·inv_freq in float32, then cos and sin of that.
func ropeAngles(cs, sn []float32, pos float32, invFreq []float32, sign float32) {
	sn = sn[:len(cs)]
	for i := range cs {
		sa, ca := math.Sincos(float64(pos * invFreq[i]))
		cs[i] = float32(ca)
		sn[i] = sign * float32(sa)
	}
}

// ropeBody is the loop body of rope, over rows.
type ropeBody struct {
	y, x, invFreq         []float32
	positions             []int32
	width, heads, headDim int
	acc                   bool
	sign                  float32
	// table, when set, holds the cosines of positions tableLo… (headDim/2
	// per position), then as many sines.
	table   []float32
	tableLo int32
}

var ropeLoops kernels.Chunks[ropeBody, *ropeBody]

func (b *ropeBody) Chunk(lo, hi int) {
	y, x, invFreq, positions := b.y, b.x, b.invFreq, b.positions
	width, heads, headDim, acc, sign := b.width, b.heads, b.headDim, b.acc, b.sign
	half := headDim / 2
	var cosb, sinb [ropeBlock]float32
	for r := lo; r < hi; r++ {
		xr, yr := x[r*width:r*width+width], y[r*width:r*width+width]
		pos := float32(positions[r])
		for f0 := 0; f0 < half; f0 += ropeBlock {
			f1 := min(f0+ropeBlock, half)
			var cs, sn []float32
			if b.table != nil {
				o := int(positions[r]-b.tableLo) * half
				cs, sn = b.table[o+f0:o+f1], b.table[len(b.table)/2+o+f0:len(b.table)/2+o+f1]
			} else {
				cs, sn = cosb[:f1-f0], sinb[:f1-f0]
				ropeAngles(cs, sn, pos, invFreq[f0:f1], sign)
			}
			for h := range heads {
				x1 := xr[h*headDim+f0 : h*headDim+f1]
				x2 := xr[h*headDim+half+f0 : h*headDim+half+f1]
				y1 := yr[h*headDim+f0 : h*headDim+f1]
				y2 := yr[h*headDim+half+f0 : h*headDim+half+f1]
				if acc {
					for i, c := range cs {
						a, b := x1[i], x2[i]
						y1[i] += a*c - b*sn[i]
						y2[i] += b*c + a*sn[i]
					}
				} else {
					for i, c := range cs {
						a, b := x1[i], x2[i] // read both before y, which may be x, is written
						y1[i] = a*c - b*sn[i]
						y2[i] = b*c + a*sn[i]
					}
				}
			}
		}
		rest := heads * headDim
		switch {
		case acc:
			for k := rest; k < width; k++ {
				yr[k] += xr[k]
			}
		case rest < width && &yr[0] != &xr[0]:
			copy(yr[rest:], xr[rest:])
		}
	}
}

// SequencePositions returns the positions of B sequences of T tokens that
// start at offset (0 in training; the KV cache's length when decoding), as
// an IDs holder for RoPE: Data[b·T + t] = offset + t.
func SequencePositions(B, T, offset int) *IDs {
	p := NewIDs(B, T)
	for i := range p.Data {
		p.Data[i] = int32(offset + i%T)
	}
	return p
}
