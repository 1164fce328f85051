package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func writeTestFile(t *testing.T, ts []Tensor, meta map[string]string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.safetensors")
	require.NoError(t, WriteFile(p, ts, meta))
	return p
}

// A file padded to 4 GiB (sparse, as truncate -s makes it) is refused from
// its header alone: the reader allocates nothing near the claimed size.
func TestOpenRefusesSparsePaddingCheaply(t *testing.T) {
	p := writeTestFile(t, []Tensor{F32Tensor("w", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6})}, nil)
	require.NoError(t, os.Truncate(p, 4<<30))
	var err error
	n := allocated(func() { _, err = ReadFile(p) })
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), "tensors cover")
	require.Less(t, n, uint64(1<<20), "bytes allocated refusing a padded file")
	n = allocated(func() { _, err = Open(p) })
	require.ErrorIs(t, err, ErrCorrupt)
	require.Less(t, n, uint64(1<<20))
}

// A consistent header for a large tensor on a sparse file opens without
// reading it; memory follows the tensors read, not the file's size.
func TestOpenIsLazy(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "big.safetensors")
	const big = 3 << 30
	var hdr bytes.Buffer
	stop := errors.New("stop")
	require.ErrorIs(t, WriteStream(&hdr, []Source{
		{Name: "big", DType: U8, Shape: []int64{big}, Data: func() ([]byte, error) { return nil, stop }},
		{Name: "small", DType: F32, Shape: []int64{2}, Data: func() ([]byte, error) { return make([]byte, 8), nil }},
	}, map[string]string{"k": "v"}), stop) // the header, then the big tensor's Data stops it
	require.NoError(t, os.WriteFile(p, hdr.Bytes(), 0o644))
	n0 := int64(binary.LittleEndian.Uint64(hdr.Bytes()))
	require.NoError(t, os.Truncate(p, 8+n0+big+8))
	var r *Reader
	var err error
	n := allocated(func() { r, err = Open(p) })
	require.NoError(t, err)
	defer r.Close()
	require.Less(t, n, uint64(1<<20))
	require.Equal(t, int64(big+8), r.DataSize())
	require.Equal(t, "v", r.Metadata["k"])
	in, ok := r.Info("big")
	require.True(t, ok)
	require.Equal(t, []int64{big}, in.Shape)
	var vals []float32
	n = allocated(func() { vals, err = r.Float32s("small") })
	require.NoError(t, err)
	require.Equal(t, []float32{0, 0}, vals)
	require.Less(t, n, uint64(1<<20))
	_, err = r.Tensor("missing")
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorIs(t, r.ReadInto("small", make([]byte, 3)), ErrInvalid)
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
}

// The largest header the default allows (16 MiB of tiny tensor entries)
// costs a small multiple of its size, not tens of times.
func TestMaximalHeaderIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; b.Len() < DefaultMaxHeaderSize-100; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"t%07d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`, i)
	}
	b.WriteString("}")
	h := b.String()
	buf := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	buf = append(buf, h...)
	var r *Reader
	var err error
	start := time.Now()
	n := allocated(func() { r, err = NewReader(bytes.NewReader(buf), int64(len(buf)), ReadOptions{}) })
	require.NoError(t, err)
	require.Greater(t, len(r.Tensors()), 250_000)
	t.Logf("16 MiB header: %d tensors, %d MB allocated, %v", len(r.Tensors()), n>>20, time.Since(start))
	require.Less(t, n, uint64(128<<20), "bytes allocated for a maximal header")
}

func TestWriteStreamMatchesWrite(t *testing.T) {
	ts := []Tensor{
		F32Tensor("a", []int64{2, 2}, []float32{1, 2, 3, 4}),
		I8Tensor("b", []int64{3}, []int8{-1, 0, 1}),
		{Name: "h", DType: BF16, Shape: []int64{2}, Data: []byte{0x80, 0x3f, 0x00, 0xc0}},
	}
	meta := map[string]string{"format": "pt"}
	var want, got bytes.Buffer
	require.NoError(t, Write(&want, ts, meta))
	var srcs []Source
	calls := 0
	for _, x := range ts {
		srcs = append(srcs, Source{Name: x.Name, DType: x.DType, Shape: x.Shape, Data: func() ([]byte, error) { calls++; return x.Data, nil }})
	}
	require.NoError(t, WriteStream(&got, srcs, meta))
	require.Equal(t, want.Bytes(), got.Bytes())
	require.Equal(t, len(ts), calls)

	p := filepath.Join(t.TempDir(), "s.safetensors")
	require.NoError(t, WriteFileStream(p, srcs, meta))
	f, err := ReadFile(p)
	require.NoError(t, err)
	sameTensors(t, f.Tensors, ts)
	h, ok := f.Tensor("h")
	require.True(t, ok)
	v, err := h.Float32s()
	require.NoError(t, err)
	require.Equal(t, []float32{1, -2}, v)

	// A failing or short source fails the save and leaves the old file.
	bad := append([]Source{}, srcs...)
	bad[1].Data = func() ([]byte, error) { return []byte{1}, nil }
	require.ErrorIs(t, WriteFileStream(p, bad, meta), ErrInvalid)
	boom := errors.New("boom")
	bad[1].Data = func() ([]byte, error) { return nil, boom }
	require.ErrorIs(t, WriteFileStream(p, bad, meta), boom)
	_, err = os.Stat(TempName(p))
	require.ErrorIs(t, err, os.ErrNotExist)
	f2, err := ReadFile(p)
	require.NoError(t, err)
	sameTensors(t, f2.Tensors, ts)
}

// F16 and BF16 widen exactly: every one of the 65,536 values against a
// float64 reference.
func TestHalfWidening(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		u := uint16(h)
		sign, exp, mant := h>>15, (h>>10)&0x1f, h&0x3ff
		got := F16ToFloat32(u)
		var want float64
		switch {
		case exp == 0x1f && mant != 0:
			require.True(t, math.IsNaN(float64(got)), "F16 %#04x", h)
			require.Equal(t, uint32(mant)<<13, math.Float32bits(got)&0x7fffff)
			continue
		case exp == 0x1f:
			want = math.Inf(1)
		case exp == 0:
			want = math.Ldexp(float64(mant), -24)
		default:
			want = math.Ldexp(float64(mant|0x400), exp-25)
		}
		if sign == 1 {
			want = -want
		}
		require.Equal(t, math.Float64bits(want), math.Float64bits(float64(got)), "F16 %#04x", h)
		b := BF16ToFloat32(u)
		require.Equal(t, uint32(h)<<16, math.Float32bits(b))
	}
	f := Tensor{Name: "h", DType: F16, Shape: []int64{2}, Data: []byte{0x00, 0x3c, 0x01, 0x00}}
	v, err := f.Float32s()
	require.NoError(t, err)
	require.Equal(t, []float32{1, float32(math.Ldexp(1, -24))}, v)
	_, err = Tensor{Name: "i", DType: I32, Shape: []int64{1}, Data: make([]byte, 4)}.Float32s()
	require.ErrorIs(t, err, ErrInvalid)
}

// A crash leaves TempName(path) behind; the next save replaces it, so
// leftovers never accumulate. A directory path is refused before writing.
func TestWriteFileLeftoversAndDirectory(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	require.NoError(t, os.WriteFile(TempName(p), []byte("partial"), 0o600))
	ts := []Tensor{F32Tensor("w", []int64{1}, []float32{1})}
	require.NoError(t, WriteFile(p, ts, nil))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	require.Equal(t, "m.safetensors", ents[0].Name())

	err = WriteFile(dir, ts, nil)
	require.ErrorIs(t, err, ErrInvalid)
	require.Contains(t, err.Error(), "is a directory")
	_, err = os.Stat(TempName(dir))
	require.ErrorIs(t, err, os.ErrNotExist)
}
