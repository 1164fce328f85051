package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// storedValue is element i of a tensor's little-endian bytes, widened to
// float32 by the definitions of the formats.
func storedValue(d safetensors.DType, b []byte, i int) float32 {
	switch d {
	case safetensors.F32:
		return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	case safetensors.BF16:
		return math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
	}
	return safetensors.F16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
}

// TestReadInPlace: readFloats and readBF16 give every stored value, with
// all bit patterns (NaNs, infinities, subnormals) and odd lengths, whether
// they read into the destination's own memory (which needs no byte
// buffer) or, transposing, through the buffer.
func TestReadInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	dtypes := []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16}
	shapes := [][]int64{{1}, {7}, {3, 5}, {33, 31}}
	var ts []safetensors.Tensor
	for _, d := range dtypes {
		for _, sh := range shapes {
			n := int64(1)
			for _, v := range sh {
				n *= v
			}
			b := make([]byte, n*d.Size())
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			ts = append(ts, safetensors.Tensor{Name: fmt.Sprintf("%v%v", d, sh), DType: d, Shape: sh, Data: b})
		}
	}
	path := filepath.Join(t.TempDir(), "t.safetensors")
	if err := safetensors.WriteFile(path, ts, nil); err != nil {
		t.Fatal(err)
	}
	st, err := openST(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tn := range ts {
		e := st.entries[tn.Name]
		n := len(tn.Data) / int(tn.DType.Size())
		var buf []byte
		got := make([]float32, n)
		if err := st.readFloats(e, got, 0, &buf); err != nil {
			t.Fatalf("%s: %v", tn.Name, err)
		}
		for i, v := range got {
			if want := storedValue(tn.DType, tn.Data, i); math.Float32bits(v) != math.Float32bits(want) {
				t.Fatalf("%s[%d] = %#08x, want %#08x", tn.Name, i, math.Float32bits(v), math.Float32bits(want))
			}
		}
		if littleEndian && cap(buf) != 0 {
			t.Errorf("%s: read through a buffer of %d bytes", tn.Name, cap(buf))
		}
		if len(tn.Shape) == 2 {
			rows, cols := int(tn.Shape[0]), int(tn.Shape[1])
			if err := st.readFloats(e, got, cols, &buf); err != nil {
				t.Fatalf("%s transposed: %v", tn.Name, err)
			}
			for r := range rows {
				for c := range cols {
					if v, want := got[c*rows+r], storedValue(tn.DType, tn.Data, r*cols+c); math.Float32bits(v) != math.Float32bits(want) {
						t.Fatalf("%s transposed [%d,%d] = %v, want %v", tn.Name, c, r, v, want)
					}
				}
			}
		}
		if err := st.readFloats(e, got[:n-1], 0, &buf); err == nil {
			t.Errorf("%s: readFloats into %d values of %d accepted", tn.Name, n-1, n)
		}
		if tn.DType != safetensors.BF16 {
			if err := st.readBF16(e, make([]uint16, n), &buf); err == nil {
				t.Errorf("%s: readBF16 accepted a %v tensor", tn.Name, tn.DType)
			}
			continue
		}
		buf = nil
		bits := make([]uint16, n)
		if err := st.readBF16(e, bits, &buf); err != nil {
			t.Fatalf("%s: %v", tn.Name, err)
		}
		for i, v := range bits {
			if want := binary.LittleEndian.Uint16(tn.Data[2*i:]); v != want {
				t.Fatalf("%s[%d] = %#04x, want %#04x", tn.Name, i, v, want)
			}
		}
		if littleEndian && cap(buf) != 0 {
			t.Errorf("%s: readBF16 read through a buffer of %d bytes", tn.Name, cap(buf))
		}
		if err := st.readBF16(e, bits[:n-1], &buf); err == nil {
			t.Errorf("%s: readBF16 into %d values of %d accepted", tn.Name, n-1, n)
		}
	}
}
