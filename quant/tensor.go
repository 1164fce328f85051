package quant

import (
	"errors"
	"fmt"
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// QMax is the largest quantized magnitude: int8 values lie in [−QMax, QMax].
const QMax = 127

// BlockSize is the number of values sharing one scale in the block format
// (as GGML's Q8_0).
const BlockSize = 32

// ErrInput reports invalid arguments to a quantization function.
var ErrInput = errors.New("quant: invalid input")

// maxScale is the largest float32 scale s whose extreme value ±127·s is
// finite (TestMaxScale): a larger one (3e38, say) dequantizes to ±Inf.
// float32(MaxFloat32/127) itself rounds up, one ulp too far.
const maxScale float32 = 0x1.020406p121

// ScaleFor returns the symmetric scale for values of magnitude up to amax:
// amax/127 (at most the largest scale whose 127 steps stay finite), or 1
// when amax is zero or not finite.
func ScaleFor(amax float32) float32 {
	s := amax / QMax
	if !(s > 0) || math.IsInf(float64(s), 0) {
		return 1
	}
	return min(s, maxScale)
}

// Round returns clamp(round(x/s), −127, 127) with ties away from zero; NaN
// gives 0. s must be positive.
func Round(x, s float32) int8 {
	f := float64(x) / float64(s)
	switch {
	case f != f:
		return 0
	case f >= QMax:
		return QMax
	case f <= -QMax:
		return -QMax
	}
	return int8(math.Round(f))
}

// QuantDequant returns the dequantized value Round(x, s)·s.
func QuantDequant(x, s float32) float32 { return float32(Round(x, s)) * s }

func absMax(x []float32) float32 {
	var m float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > m {
			m = a
		}
	}
	return m
}

func checkFinite(name string, x []float32) error {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("quant: %s: element %d is %v: %w", name, i, v, ErrInput)
		}
	}
	return nil
}

// Rows is a matrix quantized with one scale per row: a weight [out, in] per
// output channel, or activations [tokens, features] per token.
type Rows struct {
	Rows, Cols int       // the matrix's shape
	Data       []int8    // Rows·Cols, row-major
	Scale      []float32 // Rows
}

// QuantizeRows quantizes the rows×cols matrix x with one scale per row,
// s_i = max_j |x_ij| / 127, so every element satisfies |x − x̂| ≤ s_i/2.
// Non-finite values are an error.
func QuantizeRows(x []float32, rows, cols int) (*Rows, error) {
	if rows < 0 || cols < 0 || len(x) != rows*cols {
		return nil, fmt.Errorf("quant: QuantizeRows: %d values for %d×%d: %w", len(x), rows, cols, ErrInput)
	}
	if err := checkFinite("QuantizeRows", x); err != nil {
		return nil, err
	}
	r := &Rows{Rows: rows, Cols: cols, Data: make([]int8, len(x)), Scale: make([]float32, rows)}
	for i := 0; i < rows; i++ {
		row := x[i*cols : (i+1)*cols]
		s := ScaleFor(absMax(row))
		r.Scale[i] = s
		for j, v := range row {
			r.Data[i*cols+j] = Round(v, s)
		}
	}
	return r, nil
}

// QuantizeColumns quantizes the rows×cols matrix x with one scale per column
// and returns the transpose, cols×rows, with one scale per row. This turns a
// model weight [in, out] into the per-output-channel int8 weight [out, in].
func QuantizeColumns(x []float32, rows, cols int) (*Rows, error) {
	if rows < 0 || cols < 0 || len(x) != rows*cols {
		return nil, fmt.Errorf("quant: QuantizeColumns: %d values for %d×%d: %w", len(x), rows, cols, ErrInput)
	}
	t := make([]float32, len(x))
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			t[j*rows+i] = x[i*cols+j]
		}
	}
	return QuantizeRows(t, cols, rows)
}

// Dequantize writes x̂ = q·s into dst (Rows·Cols values, row-major).
func (r *Rows) Dequantize(dst []float32) error {
	if err := r.validate(); err != nil {
		return err
	}
	if len(dst) != r.Rows*r.Cols {
		return fmt.Errorf("quant: Dequantize: %d values for %d×%d: %w", len(dst), r.Rows, r.Cols, ErrInput)
	}
	for i := 0; i < r.Rows; i++ {
		kernels.DequantI8(dst[i*r.Cols:(i+1)*r.Cols], r.Data[i*r.Cols:(i+1)*r.Cols], r.Scale[i])
	}
	return nil
}

// DequantizeTransposed writes the transpose of x̂ into dst (Cols×Rows): for a
// per-output-channel weight [out, in] this is the model's [in, out] layout.
func (r *Rows) DequantizeTransposed(dst []float32) error {
	if err := r.validate(); err != nil {
		return err
	}
	if len(dst) != r.Rows*r.Cols {
		return fmt.Errorf("quant: DequantizeTransposed: %d values for %d×%d: %w", len(dst), r.Rows, r.Cols, ErrInput)
	}
	for i := 0; i < r.Rows; i++ {
		s := r.Scale[i]
		for j := 0; j < r.Cols; j++ {
			dst[j*r.Rows+i] = float32(r.Data[i*r.Cols+j]) * s
		}
	}
	return nil
}

func (r *Rows) validate() error {
	if r.Rows < 0 || r.Cols < 0 || len(r.Data) != r.Rows*r.Cols || len(r.Scale) != r.Rows {
		return fmt.Errorf("quant: Rows %d×%d with %d values and %d scales: %w", r.Rows, r.Cols, len(r.Data), len(r.Scale), ErrInput)
	}
	for i, v := range r.Data {
		if v < -QMax {
			return fmt.Errorf("quant: value %d at %d is outside [−127, 127]: %w", v, i, ErrInput)
		}
	}
	return checkScales(r.Scale)
}

// checkScales refuses a scale that is not positive or whose 127 steps
// overflow float32.
func checkScales(scale []float32) error {
	for i, s := range scale {
		if !(s > 0) || s > maxScale {
			return fmt.Errorf("quant: scale %d is %v, not in (0, %v] (positive, and 127 steps of it finite): %w", i, s, maxScale, ErrInput)
		}
	}
	return nil
}

// QuantizeTensor quantizes x with the single scale s (static per-tensor
// quantization, s typically from an Observer): values beyond 127·s saturate,
// the others satisfy |x − x̂| ≤ s/2. NaN quantizes to 0.
func QuantizeTensor(dst []int8, x []float32, s float32) error {
	if len(dst) != len(x) || !(s > 0) || math.IsInf(float64(s), 0) {
		return fmt.Errorf("quant: QuantizeTensor: %d outputs for %d values, scale %v: %w", len(dst), len(x), s, ErrInput)
	}
	for i, v := range x {
		dst[i] = Round(v, s)
	}
	return nil
}

// Blocks is a vector quantized in blocks of BlockSize consecutive values,
// each with its own scale (GGML's Q8_0 layout, with a float32 scale). The
// last block may be shorter.
type Blocks struct {
	N     int       // the number of values
	Data  []int8    // N
	Scale []float32 // ceil(N/BlockSize)
}

// QuantizeBlocks quantizes x in blocks of BlockSize values, each block with
// s = max|x_block|/127, so |x − x̂| ≤ s_block/2 element-wise. Non-finite
// values are an error.
func QuantizeBlocks(x []float32) (*Blocks, error) {
	if err := checkFinite("QuantizeBlocks", x); err != nil {
		return nil, err
	}
	nb := (len(x) + BlockSize - 1) / BlockSize
	b := &Blocks{N: len(x), Data: make([]int8, len(x)), Scale: make([]float32, nb)}
	for k := 0; k < nb; k++ {
		blk := x[k*BlockSize : min((k+1)*BlockSize, len(x))]
		s := ScaleFor(absMax(blk))
		b.Scale[k] = s
		for j, v := range blk {
			b.Data[k*BlockSize+j] = Round(v, s)
		}
	}
	return b, nil
}

// Dequantize writes x̂ into dst (N values).
func (b *Blocks) Dequantize(dst []float32) error {
	if len(dst) != b.N || len(b.Data) != b.N || len(b.Scale) != (b.N+BlockSize-1)/BlockSize {
		return fmt.Errorf("quant: Blocks.Dequantize: %d values for %d: %w", len(dst), b.N, ErrInput)
	}
	for k, sc := range b.Scale {
		lo, hi := k*BlockSize, min((k+1)*BlockSize, b.N)
		kernels.DequantI8(dst[lo:hi], b.Data[lo:hi], sc)
	}
	return nil
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }
