package model

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"unsafe"

	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/safetensors"
)

// This file reads and writes the tensors of Hugging Face safetensors files
// one at a time. Reading goes through internal/safetensors' Reader, which
// checks a shard's header against the file's size (no padding, holes or
// overlaps) before any tensor data is read; each tensor is then read whole
// with ReadInto and widened (or transposed) straight into its destination,
// so loading holds the model's weights and never a copy of the file. On a
// little-endian machine a tensor that is not transposed is read into its
// destination's own memory (readFloats, readBF16): loading then holds no
// buffer of file bytes either, which for a tied SmolLM2-135M embedding
// stored as BF16 was 56 MB of garbage beside the weights while they loaded
// (TestReadInPlace). Transposed tensors and big-endian machines go through
// one reused byte buffer of the largest such tensor.

// stEntry is one tensor of a shard, as its validated header describes it.
type stEntry struct {
	name  string
	dtype safetensors.DType
	shape []int64
}

// stFile is an open safetensors shard whose header was validated.
type stFile struct {
	path    string
	r       *safetensors.Reader
	entries map[string]*stEntry
}

// openST opens path through safetensors.Open (a regular file only, the
// header bounded and checked against the file, the tensors tiling the data
// section exactly). Nothing is allocated from the header's claims beyond
// the header itself.
func openST(path string) (*stFile, error) {
	r, err := safetensors.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("model: %w", err)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrCheckpoint, path, err)
	}
	st := &stFile{path: path, r: r, entries: map[string]*stEntry{}}
	for _, in := range r.Tensors() {
		st.entries[in.Name] = &stEntry{name: in.Name, dtype: in.DType, shape: in.Shape}
	}
	return st, nil
}

func (st *stFile) Close() error { return st.r.Close() }

// isFloat reports whether d is a dtype LoadPretrained widens to float32.
func isFloat(d safetensors.DType) bool {
	return d == safetensors.F32 || d == safetensors.F16 || d == safetensors.BF16
}

// readRaw reads e's bytes into *buf, grown as needed and reused between
// calls, and returns them.
func (st *stFile) readRaw(e *stEntry, buf *[]byte) ([]byte, error) {
	n := int64(e.dtype.Size())
	for _, d := range e.shape {
		n *= d // the header's sizes were checked against the file
	}
	if int64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if err := st.readInto(e, b); err != nil {
		return nil, err
	}
	return b, nil
}

// littleEndian is whether this machine stores numbers as safetensors
// files do, so that a tensor's bytes can be read into its destination.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// readInto reads e's bytes into b, which must hold exactly them.
func (st *stFile) readInto(e *stEntry, b []byte) error {
	if err := st.r.ReadInto(e.name, b); err != nil {
		return fmt.Errorf("%w: reading %q from %s: %w", ErrCheckpoint, e.name, st.path, err)
	}
	return nil
}

// readFloats reads e into dst (len = e's elements), widened exactly to
// float32. With cols > 0, e is a rows×cols matrix stored row-major and dst
// receives its transpose (cols×rows). buf holds the tensor's file bytes
// when they cannot be read into dst itself, and is reused between calls.
func (st *stFile) readFloats(e *stEntry, dst []float32, cols int, buf *[]byte) error {
	if !isFloat(e.dtype) {
		return fmt.Errorf("%w: %s: tensor %q is %v; LoadPretrained reads F32, F16 and BF16", ErrCheckpoint, st.path, e.name, e.dtype)
	}
	if cols == 0 && littleEndian && len(dst) > 0 {
		// The file's bytes go into the end of dst's own memory and are
		// widened forward in place. With n = len(dst) and s the stored
		// size, element i is stored from byte 4n−s·n+s·i; its float32,
		// bytes 4i to 4i+3, is written after it was read and below every
		// later element (for s = 2: 4i+4 ≤ 2n+2(i+1) as i < n; for s = 4
		// each element is its own float32).
		all := unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst))
		b := all[len(all)-int(e.dtype.Size())*len(dst):]
		if err := st.readInto(e, b); err != nil {
			return err
		}
		widen(dst, b, e.dtype)
		return nil
	}
	b, err := st.readRaw(e, buf)
	if err != nil {
		return err
	}
	if int64(len(b)) != int64(len(dst))*e.dtype.Size() {
		return fmt.Errorf("%w: %s: tensor %q holds %d bytes, want %d values", ErrCheckpoint, st.path, e.name, len(b), len(dst))
	}
	if cols == 0 {
		widen(dst, b, e.dtype)
		return nil
	}
	es, rows := int(e.dtype.Size()), len(dst)/cols
	for r := range rows {
		for c := range cols {
			dst[c*rows+r] = widenOne(b[(r*cols+c)*es:], e.dtype)
		}
	}
	return nil
}

// widen converts little-endian elements of dtype d in b to float32.
func widen(dst []float32, b []byte, d safetensors.DType) {
	switch d {
	case safetensors.F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case safetensors.BF16:
		for i := range dst {
			dst[i] = safetensors.BF16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case safetensors.F16:
		for i := range dst {
			dst[i] = safetensors.F16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
}

// widenOne converts one little-endian element of dtype d to float32.
func widenOne(b []byte, d safetensors.DType) float32 {
	switch d {
	case safetensors.F32:
		return math.Float32frombits(binary.LittleEndian.Uint32(b))
	case safetensors.BF16:
		return safetensors.BF16ToFloat32(binary.LittleEndian.Uint16(b))
	}
	return safetensors.F16ToFloat32(binary.LittleEndian.Uint16(b))
}

// f32ToF16 rounds to the nearest IEEE half, ties to even, overflowing to
// infinity; NaN stays a quiet NaN.
func f32ToF16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	a := u & 0x7fffffff
	switch {
	case a > 0x7f800000:
		return sign | 0x7e00 | uint16(a>>13)&0x1ff
	case a >= 0x477ff000: // rounds to ≥ 65520: infinity
		return sign | 0x7c00
	case a >= 0x38800000: // normal half
		r := a + 0xfff + (a>>13)&1 - 0x38000000
		return sign | uint16(r>>13)
	case a < 0x33000000: // below half the smallest subnormal: zero
		return sign
	}
	// Subnormal half: shift the full mantissa, rounding to even.
	e := a >> 23
	m := a&0x7fffff | 0x800000
	shift := 126 - e // 14 + (112 − (e − 127)) − 1 … in [14, 24]
	r := m >> shift
	rem := m & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || rem == half && r&1 == 1 {
		r++
	}
	return sign | uint16(r)
}

// narrow converts src to dtype d (little-endian) into b (len = len(src)·size).
func narrow(b []byte, src []float32, d safetensors.DType) {
	switch d {
	case safetensors.F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
	case safetensors.BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(b[2*i:], kernels.Float32ToBF16(v))
		}
	case safetensors.F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(b[2*i:], f32ToF16(v))
		}
	}
}

// stOut is one tensor to write: its values come from src, transposed when
// cols > 0 (src is then cols×rows, [in, out], and the file gets rows×cols).
type stOut struct {
	name  string
	shape []int64
	src   []float32
	cols  int
	bf16  []uint16 // the values instead of src: bfloat16, in the file's layout
}

// len returns the number of elements.
func (t stOut) len() int {
	if t.bf16 != nil {
		return len(t.bf16)
	}
	return len(t.src)
}

// writeST writes tensors of dtype d as a safetensors file to w, converting
// chunk by chunk: the header (keys sorted, metadata format "pt", padded
// with spaces to 8 bytes, as the Python implementation writes it), then the
// data in name order.
func writeST(w io.Writer, ts []stOut, d safetensors.DType) error {
	sorted := append([]stOut(nil), ts...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	type hEntry struct {
		DType   string  `json:"dtype"`
		Shape   []int64 `json:"shape"`
		Offsets []int64 `json:"data_offsets"`
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, t := range sorted {
		n := int64(t.len()) * d.Size()
		header[t.name] = hEntry{DType: d.String(), Shape: t.shape, Offsets: []int64{off, off + n}}
		off += n
	}
	hb, err := json.Marshal(header) // map keys are sorted
	if err != nil {
		return err
	}
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var lb [8]byte
	binary.LittleEndian.PutUint64(lb[:], uint64(len(hb)))
	bw.Write(lb[:])
	bw.Write(hb)
	es := int(d.Size())
	const chunk = 1 << 18 // elements
	buf := make([]byte, chunk*es)
	tmp := make([]float32, chunk)
	for _, t := range sorted {
		total := t.len()
		for done := 0; done < total; {
			n := min(chunk, total-done)
			if t.bf16 != nil {
				// bfloat16 values are written untouched as BF16, and
				// widened exactly for other dtypes.
				h := t.bf16[done : done+n]
				if d == safetensors.BF16 {
					for i, v := range h {
						binary.LittleEndian.PutUint16(buf[2*i:], v)
					}
				} else {
					for i, v := range h {
						tmp[i] = safetensors.BF16ToFloat32(v)
					}
					narrow(buf[:n*es], tmp[:n], d)
				}
				if _, err := bw.Write(buf[:n*es]); err != nil {
					return err
				}
				done += n
				continue
			}
			src := t.src[done : done+n]
			if t.cols > 0 {
				rows := total / t.cols
				// File element k (row r = k/cols, col c = k%cols) is src[c·rows + r].
				for k := range n {
					kk := done + k
					tmp[k] = t.src[(kk%t.cols)*rows+kk/t.cols]
				}
				src = tmp[:n]
			}
			narrow(buf[:n*es], src, d)
			if _, err := bw.Write(buf[:n*es]); err != nil {
				return err
			}
			done += n
		}
	}
	return bw.Flush()
}

// errNoFloat is returned for a dtype name SavePretrained cannot write.
var errNoFloat = errors.New("dtype must be float32, float16 or bfloat16")

// readBF16 reads the BF16 tensor e into dst (len = e's elements) as stored.
func (st *stFile) readBF16(e *stEntry, dst []uint16, buf *[]byte) error {
	if e.dtype != safetensors.BF16 {
		return fmt.Errorf("%w: %s: tensor %q is %v, not BF16", ErrCheckpoint, st.path, e.name, e.dtype)
	}
	if littleEndian && len(dst) > 0 {
		return st.readInto(e, unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 2*len(dst)))
	}
	b, err := st.readRaw(e, buf)
	if err != nil {
		return err
	}
	if len(b) != 2*len(dst) {
		return fmt.Errorf("%w: %s: tensor %q holds %d bytes, want %d values", ErrCheckpoint, st.path, e.name, len(b), len(dst))
	}
	for i := range dst {
		dst[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return nil
}
