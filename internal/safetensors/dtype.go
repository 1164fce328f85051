package safetensors

import (
	"fmt"

	st "github.com/nlpodyssey/safetensors"
)

// DType is the element type of a tensor, named as in the safetensors header.
type DType uint8

// The element types of the safetensors format that this package reads and
// writes. The zero value is not a valid type, so a Tensor whose DType was
// never set fails validation instead of being written as some default.
const (
	BOOL DType = iota + 1
	U8
	I8
	I16
	U16
	F16
	BF16
	I32
	U32
	F32
	F64
	I64
	U64
)

var dtypeInfo = [...]struct {
	name string
	size int64
	lib  st.DType
}{
	BOOL: {"BOOL", 1, st.BOOL},
	U8:   {"U8", 1, st.U8},
	I8:   {"I8", 1, st.I8},
	I16:  {"I16", 2, st.I16},
	U16:  {"U16", 2, st.U16},
	F16:  {"F16", 2, st.F16},
	BF16: {"BF16", 2, st.BF16},
	I32:  {"I32", 4, st.I32},
	U32:  {"U32", 4, st.U32},
	F32:  {"F32", 4, st.F32},
	F64:  {"F64", 8, st.F64},
	I64:  {"I64", 8, st.I64},
	U64:  {"U64", 8, st.U64},
}

// Valid reports whether d is one of the defined element types.
func (d DType) Valid() bool {
	return d > 0 && int(d) < len(dtypeInfo)
}

// Size is the size of one element in bytes, or 0 for an invalid DType.
func (d DType) Size() int64 {
	if !d.Valid() {
		return 0
	}
	return dtypeInfo[d].size
}

// String returns the header name of d ("F32", "I8", ...).
func (d DType) String() string {
	if !d.Valid() {
		return fmt.Sprintf("DType(%d)", uint8(d))
	}
	return dtypeInfo[d].name
}

// ParseDType returns the DType whose header name is s.
func ParseDType(s string) (DType, error) {
	for d := BOOL; d.Valid(); d++ {
		if dtypeInfo[d].name == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("safetensors: unknown dtype %q: %w", s, ErrInvalid)
}
