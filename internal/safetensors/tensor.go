package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
)

// Tensor is one named tensor of a safetensors file. Data holds the elements
// in row-major (C) order, little-endian, exactly NumElements × DType.Size()
// bytes. A nil or empty Shape is a scalar (one element).
type Tensor struct {
	Name  string // unique within a file
	DType DType
	Shape []int64
	Data  []byte
}

// NumElements returns the product of the shape, or an error wrapping
// ErrInvalid when a dimension is negative or the product overflows int64.
func (t Tensor) NumElements() (int64, error) {
	return numElements(t.Shape)
}

// numElements multiplies dims with overflow checks. Every dimension is
// checked for sign first, and a zero dimension makes the product zero even
// when the other dimensions alone would overflow (as the format allows).
func numElements(shape []int64) (int64, error) {
	zero := false
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("safetensors: negative dimension %d in shape %v: %w", d, shape, ErrInvalid)
		}
		zero = zero || d == 0
	}
	if zero {
		return 0, nil
	}
	n := uint64(1)
	for _, d := range shape {
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("safetensors: shape %v has more than 2^63-1 elements: %w", shape, ErrInvalid)
		}
		n = lo
	}
	return int64(n), nil
}

// byteSize returns the number of data bytes the tensor's dtype and shape
// call for, with overflow checks.
func (t Tensor) byteSize() (int64, error) {
	if !t.DType.Valid() {
		return 0, fmt.Errorf("safetensors: tensor %q: invalid dtype %v: %w", t.Name, t.DType, ErrInvalid)
	}
	n, err := t.NumElements()
	if err != nil {
		return 0, fmt.Errorf("safetensors: tensor %q: %w", t.Name, err)
	}
	hi, lo := bits.Mul64(uint64(n), uint64(t.DType.Size()))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("safetensors: tensor %q: %d elements of %v overflow int64 bytes: %w", t.Name, n, t.DType, ErrInvalid)
	}
	return int64(lo), nil
}

// Validate checks that the tensor has a name, a known dtype, a valid shape
// and exactly the number of data bytes that dtype and shape call for.
func (t Tensor) Validate() error {
	if t.Name == "" {
		return fmt.Errorf("safetensors: empty tensor name: %w", ErrInvalid)
	}
	if t.Name == metadataKey {
		return fmt.Errorf("safetensors: tensor name %q is reserved for metadata: %w", t.Name, ErrInvalid)
	}
	size, err := t.byteSize()
	if err != nil {
		return err
	}
	if int64(len(t.Data)) != size {
		return fmt.Errorf("safetensors: tensor %q: %v%v needs %d bytes, has %d: %w",
			t.Name, t.DType, t.Shape, size, len(t.Data), ErrInvalid)
	}
	return nil
}

func (t Tensor) checkView(want DType, elem int) (int, error) {
	if t.DType != want {
		return 0, fmt.Errorf("safetensors: tensor %q is %v, not %v: %w", t.Name, t.DType, want, ErrInvalid)
	}
	if err := t.Validate(); err != nil {
		return 0, err
	}
	return len(t.Data) / elem, nil
}

// F32Tensor returns an F32 tensor holding a little-endian copy of values.
// The shape is copied too; it is checked by Validate and Write, not here.
func F32Tensor(name string, shape []int64, values []float32) Tensor {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, DType: F32, Shape: cloneShape(shape), Data: data}
}

// Float32s decodes an F32, F16 or BF16 tensor into a new slice; F16 and
// BF16 widen exactly (every value of both is a float32, NaN payloads and
// subnormals included).
func (t Tensor) Float32s() ([]float32, error) {
	var n int
	var err error
	switch t.DType {
	case F16, BF16:
		n, err = t.checkView(t.DType, 2)
	default:
		n, err = t.checkView(F32, 4)
	}
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	switch t.DType {
	case F16:
		for i := range out {
			out[i] = F16ToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = BF16ToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	default:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	}
	return out, nil
}

// BF16ToFloat32 widens a bfloat16 (the high half of a float32) exactly.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F16ToFloat32 widens an IEEE 754 binary16 exactly: subnormals become
// normal float32s, infinities stay infinite and NaNs keep their payload.
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: mant × 2^-24; normalize into float32.
	e := uint32(127 - 15 + 1)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// I8Tensor returns an I8 tensor holding a copy of values.
func I8Tensor(name string, shape []int64, values []int8) Tensor {
	data := make([]byte, len(values))
	for i, v := range values {
		data[i] = byte(v)
	}
	return Tensor{Name: name, DType: I8, Shape: cloneShape(shape), Data: data}
}

// Int8s decodes an I8 tensor into a new slice.
func (t Tensor) Int8s() ([]int8, error) {
	n, err := t.checkView(I8, 1)
	if err != nil {
		return nil, err
	}
	out := make([]int8, n)
	for i := range out {
		out[i] = int8(t.Data[i])
	}
	return out, nil
}

// U8Tensor returns a U8 tensor holding a copy of values.
func U8Tensor(name string, shape []int64, values []byte) Tensor {
	return Tensor{Name: name, DType: U8, Shape: cloneShape(shape), Data: append([]byte{}, values...)}
}

// Uint8s returns a copy of a U8 tensor's elements.
func (t Tensor) Uint8s() ([]byte, error) {
	if _, err := t.checkView(U8, 1); err != nil {
		return nil, err
	}
	return append([]byte{}, t.Data...), nil
}

// I32Tensor returns an I32 tensor holding a little-endian copy of values.
func I32Tensor(name string, shape []int64, values []int32) Tensor {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], uint32(v))
	}
	return Tensor{Name: name, DType: I32, Shape: cloneShape(shape), Data: data}
}

// Int32s decodes an I32 tensor into a new slice.
func (t Tensor) Int32s() ([]int32, error) {
	n, err := t.checkView(I32, 4)
	if err != nil {
		return nil, err
	}
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// I64Tensor returns an I64 tensor holding a little-endian copy of values.
func I64Tensor(name string, shape []int64, values []int64) Tensor {
	data := make([]byte, 8*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint64(data[8*i:], uint64(v))
	}
	return Tensor{Name: name, DType: I64, Shape: cloneShape(shape), Data: data}
}

// Int64s decodes an I64 tensor into a new slice.
func (t Tensor) Int64s() ([]int64, error) {
	n, err := t.checkView(I64, 8)
	if err != nil {
		return nil, err
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return out, nil
}

// cloneShape copies a shape and never returns nil, so that a scalar is
// written as "shape": [] (a nil slice would marshal as null, which the
// format does not allow).
func cloneShape(s []int64) []int64 {
	return append(make([]int64, 0, len(s)), s...)
}
