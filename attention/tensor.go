package attention

import (
	"errors"
	"fmt"
)

// ErrShape reports tensors whose shapes, strides or lengths do not fit
// together. Errors returned by this package wrap it (test with errors.Is).
var ErrShape = errors.New("bad shape")

// ErrOption reports an invalid option value.
var ErrOption = errors.New("bad option")

// Tensor is a float32 view of [B, H, T, D] data: element (b, h, t, d) is
// Data[b·StrideB + h·StrideH + t·StrideT + d]. The feature axis D is always
// contiguous; the other strides may be anything that keeps every element
// inside Data, so a Tensor can describe a contiguous [B, H, T, D] array, the
// columns of a packed QKV matrix, or a KV cache with spare capacity.
//
// A Tensor does not own its data. Views passed as outputs must not overlap
// each other or the inputs.
type Tensor struct {
	Data                      []float32
	B, H, T, D                int
	StrideB, StrideH, StrideT int
}

// NewTensor allocates a zeroed contiguous [b, h, t, d] tensor.
func NewTensor(b, h, t, d int) Tensor {
	x, err := Contiguous(make([]float32, b*h*t*d), b, h, t, d)
	if err != nil {
		panic(err)
	}
	return x
}

// Contiguous views data as a contiguous [b, h, t, d] tensor. data must hold
// exactly b·h·t·d elements.
func Contiguous(data []float32, b, h, t, d int) (Tensor, error) {
	if b < 0 || h < 0 || t < 0 || d < 0 {
		return Tensor{}, fmt.Errorf("attention: negative dimension in [%d %d %d %d]: %w", b, h, t, d, ErrShape)
	}
	if len(data) != b*h*t*d {
		return Tensor{}, fmt.Errorf("attention: %d elements for a [%d %d %d %d] tensor: %w", len(data), b, h, t, d, ErrShape)
	}
	x := Tensor{Data: data, B: b, H: h, T: t, D: d, StrideB: h * t * d, StrideH: t * d, StrideT: d}
	return x, nil
}

// PackedQKV views the output of a fused QKV projection: a row-major
// [b·t, (h+2·kvh)·d] matrix whose row b·t+i holds token i of sequence b as h
// query heads of d features, then kvh key heads, then kvh value heads. The
// three views share qkv; q is [b, h, t, d], k and v are [b, kvh, t, d].
func PackedQKV(qkv []float32, b, t, h, kvh, d int) (q, k, v Tensor, err error) {
	if b < 0 || t < 0 || h <= 0 || kvh <= 0 || d <= 0 {
		return q, k, v, fmt.Errorf("attention: packed QKV with b=%d t=%d h=%d kvh=%d d=%d: %w", b, t, h, kvh, d, ErrShape)
	}
	w := (h + 2*kvh) * d
	if len(qkv) != b*t*w {
		return q, k, v, fmt.Errorf("attention: packed QKV of %d elements, want [%d, %d]: %w", len(qkv), b*t, w, ErrShape)
	}
	view := func(off, heads int) Tensor {
		data := qkv
		if len(data) > 0 {
			data = data[off:]
		}
		return Tensor{Data: data, B: b, H: heads, T: t, D: d, StrideB: t * w, StrideH: d, StrideT: w}
	}
	return view(0, h), view(h*d, kvh), view((h+kvh)*d, kvh), nil
}

// PackedHeads views a row-major [b·t, h·d] matrix (row b·t+i holds the h heads
// of token i of sequence b side by side) as a [b, h, t, d] tensor. This is the
// layout the attention output has before the output projection.
func PackedHeads(data []float32, b, t, h, d int) (Tensor, error) {
	if b < 0 || t < 0 || h < 0 || d < 0 {
		return Tensor{}, fmt.Errorf("attention: packed heads with b=%d t=%d h=%d d=%d: %w", b, t, h, d, ErrShape)
	}
	if len(data) != b*t*h*d {
		return Tensor{}, fmt.Errorf("attention: packed heads of %d elements, want [%d, %d]: %w", len(data), b*t, h*d, ErrShape)
	}
	return Tensor{Data: data, B: b, H: h, T: t, D: d, StrideB: t * h * d, StrideH: d, StrideT: h * d}, nil
}

// Index returns the position of element (b, h, t, d) in x.Data.
func (x Tensor) Index(b, h, t, d int) int {
	return b*x.StrideB + h*x.StrideH + t*x.StrideT + d
}

// At returns element (b, h, t, d).
func (x Tensor) At(b, h, t, d int) float32 { return x.Data[x.Index(b, h, t, d)] }

// Row returns the D features of (b, h, t) as a slice of x.Data.
func (x Tensor) Row(b, h, t int) []float32 {
	i := x.Index(b, h, t, 0)
	return x.Data[i : i+x.D : i+x.D]
}

// Len returns the number of elements B·H·T·D the view describes.
func (x Tensor) Len() int { return x.B * x.H * x.T * x.D }

// IsContiguous reports whether x is laid out as a contiguous [B, H, T, D]
// array starting at Data[0].
func (x Tensor) IsContiguous() bool {
	return x.StrideT == x.D && x.StrideH == x.T*x.D && x.StrideB == x.H*x.T*x.D
}

// Validate checks that the dimensions and strides are non-negative, that
// the stride of every axis longer than 1 is at least D (a row never runs into
// the next one along that axis), and that every element lies inside Data.
// It does not check views against each other for overlap.
func (x Tensor) Validate() error {
	if x.B < 0 || x.H < 0 || x.T < 0 || x.D < 0 {
		return fmt.Errorf("attention: tensor dims [%d %d %d %d]: %w", x.B, x.H, x.T, x.D, ErrShape)
	}
	if x.StrideB < 0 || x.StrideH < 0 || x.StrideT < 0 {
		return fmt.Errorf("attention: negative stride (%d %d %d): %w", x.StrideB, x.StrideH, x.StrideT, ErrShape)
	}
	if x.Len() == 0 {
		return nil
	}
	if x.T > 1 && x.StrideT < x.D {
		return fmt.Errorf("attention: row stride %d below D=%d: %w", x.StrideT, x.D, ErrShape)
	}
	if x.H > 1 && x.StrideH < x.D {
		return fmt.Errorf("attention: head stride %d below D=%d: %w", x.StrideH, x.D, ErrShape)
	}
	if x.B > 1 && x.StrideB < x.D {
		return fmt.Errorf("attention: batch stride %d below D=%d: %w", x.StrideB, x.D, ErrShape)
	}
	last := x.Index(x.B-1, x.H-1, x.T-1, x.D-1)
	if last >= len(x.Data) {
		return fmt.Errorf("attention: view [%d %d %d %d] reaches element %d of %d: %w", x.B, x.H, x.T, x.D, last, len(x.Data), ErrShape)
	}
	return nil
}

// shapeString formats the dimensions for error messages.
func (x Tensor) shapeString() string {
	return fmt.Sprintf("[%d %d %d %d]", x.B, x.H, x.T, x.D)
}
