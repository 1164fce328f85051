package model

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"sort"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// This file reads and writes the tensors of Hugging Face safetensors files
// one at a time, so that loading a model holds its float32 weights and a
// bounded chunk buffer, never a copy of the file: the header is parsed and
// checked against the file first, then each tensor is read with ReadAt in
// chunks of at most hfChunkBytes and widened (or transposed) straight into
// its destination.

// hfMaxHeader bounds a shard's JSON header: a model with thousands of
// tensors has a header of a few hundred KiB.
const hfMaxHeader = 16 << 20

// hfChunkBytes is the most file bytes held at once while reading a tensor.
const hfChunkBytes = 4 << 20

// hfMaxDims bounds a tensor's rank (no framework goes beyond 64).
const hfMaxDims = 64

// stEntry is one tensor of a safetensors header, validated against the file.
type stEntry struct {
	name  string
	dtype safetensors.DType
	shape []int64
	begin int64 // absolute file offset of the first byte
	end   int64 // absolute file offset after the last byte
}

// stFile is an open safetensors file whose header was validated.
type stFile struct {
	path    string
	f       *os.File
	entries map[string]*stEntry
	meta    map[string]string
}

// errCorrupt formats an error about a malformed file; it wraps
// ErrCheckpoint and safetensors.ErrCorrupt.
func errCorrupt(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: "+format+": %w", append(append([]any{ErrCheckpoint, path}, args...), safetensors.ErrCorrupt)...)
}

// openST opens path and validates its header: the length against the file
// size, the JSON (one object, no duplicate keys), every entry's dtype,
// shape and offsets, and that the tensors tile the data section exactly.
// Nothing is allocated from the header's claims beyond the header itself.
func openST(path string) (_ *stFile, err error) {
	// Stat first and open non-blocking: a FIFO must not hang the load.
	f, fi, err := safetensors.OpenRegular(path)
	if errors.Is(err, safetensors.ErrNotRegular) {
		return nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	size := fi.Size()
	if size < 8 {
		return nil, errCorrupt(path, "%d bytes is too short for a header", size)
	}
	var lb [8]byte
	if _, err := f.ReadAt(lb[:], 0); err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(lb[:])
	if n > hfMaxHeader || n > uint64(size-8) {
		return nil, errCorrupt(path, "header length %d exceeds the limit %d or the file's %d bytes", n, hfMaxHeader, size)
	}
	h := make([]byte, n)
	if _, err := f.ReadAt(h, 8); err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	st := &stFile{path: path, f: f, entries: map[string]*stEntry{}, meta: map[string]string{}}
	base := 8 + int64(n)
	if err := st.parseHeader(h, base, size); err != nil {
		return nil, err
	}
	return st, nil
}

// parseHeader decodes and checks the JSON header h; the data section runs
// from base to size.
func (st *stFile) parseHeader(h []byte, base, size int64) error {
	dec := json.NewDecoder(bytes.NewReader(h))
	bad := func(format string, args ...any) error { return errCorrupt(st.path, format, args...) }
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return bad("header is not a JSON object")
	}
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bad("header JSON: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return bad("header key %v", tok)
		}
		if key == "__metadata__" {
			if seenMeta {
				return bad("duplicate key %q", key)
			}
			seenMeta = true
			var m map[string]string
			if err := dec.Decode(&m); err != nil {
				return bad("__metadata__: %v", err)
			}
			for k, v := range m {
				st.meta[k] = v
			}
			continue
		}
		if key == "" {
			return bad("empty tensor name")
		}
		if _, dup := st.entries[key]; dup {
			return bad("duplicate tensor %q", key)
		}
		var e struct {
			DType   string  `json:"dtype"`
			Shape   []int64 `json:"shape"`
			Offsets []int64 `json:"data_offsets"`
		}
		if err := dec.Decode(&e); err != nil {
			return bad("tensor %q: %v", key, err)
		}
		dt, err := safetensors.ParseDType(e.DType)
		if err != nil {
			return bad("tensor %q: unknown dtype %q", key, e.DType)
		}
		if len(e.Shape) > hfMaxDims || len(e.Offsets) != 2 {
			return bad("tensor %q: %d dimensions, %d data offsets", key, len(e.Shape), len(e.Offsets))
		}
		elems, ok := elemsChecked(e.Shape)
		if !ok {
			return bad("tensor %q: shape %v", key, e.Shape)
		}
		hi, nb := bits.Mul64(uint64(elems), uint64(dt.Size()))
		b, end := e.Offsets[0], e.Offsets[1]
		if hi != 0 || b < 0 || b > end || end > size-base || uint64(end-b) != nb {
			return bad("tensor %q: data offsets %v do not hold %v %v in a %d-byte data section", key, e.Offsets, e.DType, e.Shape, size-base)
		}
		st.entries[key] = &stEntry{name: key, dtype: dt, shape: e.Shape, begin: base + b, end: base + end}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return bad("header JSON does not close")
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("data after the header's JSON object")
	}
	// The tensors must tile the data section, without holes or overlaps.
	list := make([]*stEntry, 0, len(st.entries))
	for _, e := range st.entries {
		list = append(list, e)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].begin != list[j].begin {
			return list[i].begin < list[j].begin
		}
		return list[i].end < list[j].end
	})
	pos := base
	for _, e := range list {
		if e.begin != pos {
			return bad("tensor %q starts at %d, expected %d (hole or overlap)", e.name, e.begin-base, pos-base)
		}
		pos = e.end
	}
	if pos != size {
		return bad("tensors cover %d of the %d data bytes", pos-base, size-base)
	}
	return nil
}

// elemsChecked multiplies a shape's dimensions, refusing negative ones and
// products beyond MaxTensorElems.
func elemsChecked(shape []int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d == 0 {
			n = 0
			continue
		}
		if n != 0 && d > math.MaxInt64/n {
			return 0, false
		}
		n *= d
	}
	return n, n <= MaxTensorElems
}

func (st *stFile) Close() error { return st.f.Close() }

// isFloat reports whether d is a dtype LoadPretrained widens to float32.
func isFloat(d safetensors.DType) bool {
	return d == safetensors.F32 || d == safetensors.F16 || d == safetensors.BF16
}

// readFloats reads e into dst (len = e's elements), widened exactly to
// float32. With cols > 0, e is a rows×cols matrix stored row-major and dst
// receives its transpose (cols×rows). At most hfChunkBytes of file data
// are held at once; buf is reused between calls.
func (st *stFile) readFloats(e *stEntry, dst []float32, cols int, buf *[]byte) error {
	if !isFloat(e.dtype) {
		return fmt.Errorf("%w: %s: tensor %q is %v; LoadPretrained reads F32, F16 and BF16", ErrCheckpoint, st.path, e.name, e.dtype)
	}
	es := int(e.dtype.Size())
	total := len(dst)
	rows := 0
	if cols > 0 {
		rows = total / cols
	}
	// Chunks hold whole rows when transposing.
	per := hfChunkBytes / es
	if cols > 0 {
		per = max(1, per/cols) * cols
	}
	if cap(*buf) < min(per, total)*es {
		*buf = make([]byte, min(per, total)*es)
	}
	for done := 0; done < total; {
		n := min(per, total-done)
		b := (*buf)[:n*es]
		if _, err := st.f.ReadAt(b, e.begin+int64(done*es)); err != nil {
			return fmt.Errorf("model: reading %q from %s: %w", e.name, st.path, err)
		}
		if cols == 0 {
			widen(dst[done:done+n], b, e.dtype)
		} else {
			r0 := done / cols
			for k := 0; k < n; k++ {
				r, c := r0+k/cols, k%cols
				dst[c*rows+r] = widenOne(b[k*es:], e.dtype)
			}
		}
		done += n
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

// f32ToBF16 rounds to the nearest bfloat16, ties to even; NaN stays a
// quiet NaN.
func f32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
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
			binary.LittleEndian.PutUint16(b[2*i:], f32ToBF16(v))
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
		n := int64(len(t.src)) * d.Size()
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
		total := len(t.src)
		for done := 0; done < total; {
			n := min(chunk, total-done)
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
