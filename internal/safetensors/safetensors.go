// Package safetensors reads and writes the safetensors format of Hugging
// Face (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header, then the data section.
//
// It backs galleon's model checkpoints, int8 checkpoints and PEFT LoRA
// adapter files, which must open in the Python ecosystem and must be safe to
// open when they come from elsewhere. Parsing of the header's tensor entries
// is delegated to github.com/nlpodyssey/safetensors, which bounds the header,
// checks each size with overflow-checked products and requires the tensors
// to tile the data section exactly. This package adds what that library
// leaves out for hostile files:
//   - a configurable header bound (16 MiB by default) checked against the
//     real file size before anything is allocated;
//   - a structural pre-scan of the JSON before the library decodes it into
//     maps: one object, nesting no deeper than the format's, arrays of at
//     most 64 elements (the library's decoder costs ~40 bytes per array
//     element, so an unbounded shape turns a 100 MB header into 4 GB);
//   - rejection of duplicate keys (the library keeps the last one silently)
//     and of empty names;
//   - dimensions beyond int64, and a second, independent check of every
//     offset before slicing.
//
// Every violation returns an error wrapping ErrCorrupt; no input makes Read
// panic (see FuzzRead).
//
// Writing is deterministic: the data section holds tensors by decreasing
// element size, then by name (the order of the Python implementation, which
// keeps every tensor aligned to its element size), the JSON header has its
// keys sorted, and the header is padded with spaces to a multiple of 8
// bytes.
package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"unicode/utf8"

	st "github.com/nlpodyssey/safetensors"
)

// ErrCorrupt is wrapped by every error that Read returns for a malformed
// file (as opposed to an I/O error of the underlying reader).
var ErrCorrupt = errors.New("corrupt safetensors file")

// ErrInvalid is wrapped by errors about invalid arguments: a tensor whose
// data does not match its dtype and shape, duplicate names, and the like.
var ErrInvalid = errors.New("invalid safetensors argument")

// DefaultMaxHeaderSize is the largest JSON header Read accepts by default:
// 16 MiB, about 100 times the header of a large model with thousands of
// tensors. Decoding a header costs tens of times its size in memory and
// about a second per 5 MB, so the default stays far below MaxHeaderSize.
const DefaultMaxHeaderSize = 16 << 20

// MaxHeaderSize is the largest header ReadOptions can allow: the limit of
// the reference implementation, which the underlying parser enforces too.
const MaxHeaderSize = 100_000_000

// maxArrayLen bounds the arrays of the header (shape and data_offsets):
// a shape has one entry per dimension, and 64 is the most any framework
// supports, while an unbounded array of small numbers is the cheapest way
// to make a decoder allocate many times the header's size.
const maxArrayLen = 64

// metadataKey is the reserved header key of the string→string metadata.
const metadataKey = "__metadata__"

// maxHeaderDepth is the deepest nesting the format uses: the header object,
// a tensor entry, and its shape or data_offsets array.
const maxHeaderDepth = 3

// ReadOptions tune Read. The zero value gives the defaults.
type ReadOptions struct {
	// MaxHeaderSize bounds the JSON header in bytes; 0 means
	// DefaultMaxHeaderSize, and values above the package's MaxHeaderSize
	// are lowered to it.
	MaxHeaderSize int64
}

// File is the content of a safetensors file.
type File struct {
	// Tensors in the order of their data in the file (zero-sized tensors,
	// which share an offset, by name).
	Tensors []Tensor
	// Metadata is the header's __metadata__ map; never nil after Read.
	Metadata map[string]string
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("safetensors: "+format+": %w", append(args, ErrCorrupt)...)
}

// ReadFile reads and validates the safetensors file at path with the
// default options.
func ReadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("safetensors: %s is not a regular file: %w", path, ErrInvalid)
	}
	out, err := Read(f, fi.Size(), ReadOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return out, nil
}

// Read reads and validates a safetensors file of size bytes from r. The
// returned tensors' Data slices share one buffer holding the file (each is
// capped at its own end, so appending to one never overwrites another).
//
// Nothing is allocated from the header's claims: the header length is
// checked against opts.MaxHeaderSize and size first, and the one buffer of
// size bytes is allocated only after the header parsed and r proved to hold
// size bytes.
func Read(r io.ReaderAt, size int64, opts ReadOptions) (*File, error) {
	if r == nil {
		return nil, fmt.Errorf("safetensors: nil reader: %w", ErrInvalid)
	}
	maxHeader := opts.MaxHeaderSize
	if maxHeader <= 0 {
		maxHeader = DefaultMaxHeaderSize
	}
	maxHeader = min(maxHeader, MaxHeaderSize)
	if size < 8 {
		return nil, corrupt("%d bytes is too short for the header length", size)
	}
	if uint64(size) > uint64(math.MaxInt) {
		return nil, fmt.Errorf("safetensors: size %d does not fit in memory: %w", size, ErrInvalid)
	}
	var lenBuf [8]byte
	if err := readFull(r, lenBuf[:], 0); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > uint64(maxHeader) {
		return nil, corrupt("header length %d exceeds the limit %d", n, maxHeader)
	}
	if n > uint64(size-8) {
		return nil, corrupt("header length %d exceeds the %d bytes after the length", n, size-8)
	}
	header := make([]byte, n)
	if err := readFull(r, header, 8); err != nil {
		return nil, err
	}
	if err := checkHeader(header); err != nil {
		return nil, err
	}
	// Prove the reader really holds size bytes before allocating them: a
	// caller's size is only a claim about r.
	if size > 8+int64(n) {
		var last [1]byte
		if err := readFull(r, last[:], size-1); err != nil {
			return nil, err
		}
	}
	buf := make([]byte, size)
	copy(buf, lenBuf[:])
	copy(buf[8:], header)
	if err := readFull(r, buf[8+n:], 8+int64(n)); err != nil {
		return nil, err
	}
	return parse(buf, int64(n))
}

// readFull reads len(p) bytes at off; a short read means the file is
// truncated relative to what its size or header promised.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	m, err := r.ReadAt(p, off)
	if m == len(p) {
		return nil // io.ReaderAt may report io.EOF together with a full read
	}
	if err == nil || errors.Is(err, io.EOF) {
		return corrupt("truncated: read %d of %d bytes at offset %d", m, len(p), off)
	}
	return fmt.Errorf("safetensors: reading %d bytes at offset %d: %w", len(p), off, err)
}

// parse validates the whole file in buf (header length n) with the library
// and then re-checks everything this package relies on before slicing.
func parse(buf []byte, n int64) (*File, error) {
	_, meta, err := st.ReadMetadata(buf)
	if err != nil {
		return nil, corrupt("%w", err)
	}
	base := 8 + n
	dataLen := int64(len(buf)) - base
	infos := meta.Tensors()
	type placed struct {
		t          Tensor
		begin, end int64
	}
	ps := make([]placed, 0, len(infos))
	for name, info := range infos {
		if name == "" {
			return nil, corrupt("empty tensor name")
		}
		dt, ok := fromLib(info.DType)
		if !ok {
			return nil, corrupt("tensor %q: unsupported dtype %d", name, info.DType)
		}
		shape := make([]int64, len(info.Shape))
		for i, d := range info.Shape {
			if d > math.MaxInt64 {
				return nil, corrupt("tensor %q: dimension %d exceeds int64", name, d)
			}
			shape[i] = int64(d)
		}
		b, e := info.DataOffsets[0], info.DataOffsets[1]
		if b > e || e > uint64(dataLen) {
			return nil, corrupt("tensor %q: data offsets [%d, %d] outside the %d-byte data section", name, b, e, dataLen)
		}
		begin, end := int64(b), int64(e)
		t := Tensor{Name: name, DType: dt, Shape: shape, Data: buf[base+begin : base+end : base+end]}
		if err := t.Validate(); err != nil {
			return nil, corrupt("%w", err)
		}
		ps = append(ps, placed{t, begin, end})
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].begin != ps[j].begin {
			return ps[i].begin < ps[j].begin
		}
		if ps[i].end != ps[j].end {
			return ps[i].end < ps[j].end
		}
		return ps[i].t.Name < ps[j].t.Name
	})
	f := &File{Tensors: make([]Tensor, len(ps)), Metadata: map[string]string{}}
	var pos int64
	for i, p := range ps {
		if p.begin != pos {
			return nil, corrupt("tensor %q starts at %d, expected %d (hole or overlap)", p.t.Name, p.begin, pos)
		}
		pos = p.end
		f.Tensors[i] = p.t
	}
	if pos != dataLen {
		return nil, corrupt("tensors cover %d of the %d data bytes", pos, dataLen)
	}
	for k, v := range meta.Metadata() {
		f.Metadata[k] = v
	}
	return f, nil
}

// checkHeader is a structural pass over the JSON header, before the library
// decodes it into maps: the header must be one object starting at its first
// byte, with non-empty, unique tensor names, no duplicate keys at any level
// (a map decoder would keep the last one silently), every top-level value an
// object, and no nesting deeper than the format needs.
func checkHeader(h []byte) error {
	if len(h) == 0 || h[0] != '{' {
		return corrupt("header does not start with '{'")
	}
	type frame struct {
		obj     bool
		wantKey bool
		keys    map[string]struct{}
		n       int // elements so far, for arrays
	}
	var stack []frame
	done := false
	lastKey := ""
	dec := json.NewDecoder(bytes.NewReader(h))
	dec.UseNumber()
	valueDone := func() {
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			top.wantKey = top.obj
			top.n++
		}
		if len(stack) == 0 {
			done = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return corrupt("header JSON: %w", err)
		}
		if done {
			return corrupt("header has data after its JSON object")
		}
		if len(stack) > 0 && !stack[len(stack)-1].obj && stack[len(stack)-1].n >= maxArrayLen && tok != json.Delim(']') {
			return corrupt("header array longer than %d elements", maxArrayLen)
		}
		if len(stack) > 0 && stack[len(stack)-1].obj && stack[len(stack)-1].wantKey {
			top := &stack[len(stack)-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				valueDone()
				continue
			}
			key, ok := tok.(string)
			if !ok {
				return corrupt("header JSON: object key is %v", tok)
			}
			if len(stack) == 1 && key == "" {
				return corrupt("empty tensor name")
			}
			if _, dup := top.keys[key]; dup {
				return corrupt("duplicate key %q in header", key)
			}
			top.keys[key] = struct{}{}
			top.wantKey = false
			lastKey = key
			continue
		}
		if len(stack) == 1 && !(lastKey == metadataKey && tok == nil) {
			// The reference implementation reads "__metadata__": null as
			// no metadata; anything else at this level must be an object.
			if d, ok := tok.(json.Delim); !ok || d != '{' {
				return corrupt("header entry is %v, not an object", tok)
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) == maxHeaderDepth {
				return corrupt("header nested deeper than %d levels", maxHeaderDepth)
			}
			obj := tok == json.Delim('{')
			fr := frame{obj: obj, wantKey: obj}
			if obj {
				fr.keys = map[string]struct{}{}
			}
			stack = append(stack, fr)
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			if len(stack) == 0 {
				return corrupt("header is not a JSON object")
			}
			valueDone()
		}
	}
	if !done {
		return corrupt("header JSON ends early")
	}
	return nil
}

// view adapts a validated Tensor to the library's writer.
type view struct {
	dt    st.DType
	shape []uint64
	data  []byte
}

func (v view) DType() st.DType { return v.dt }
func (v view) Shape() []uint64 { return v.shape }
func (v view) Data() []byte    { return v.data }
func (v view) DataLen() uint64 { return uint64(len(v.data)) }

// prepare validates what Write would write, so that invalid input is
// rejected before a single byte reaches the writer (or the disk).
func prepare(tensors []Tensor, metadata map[string]string) (map[string]view, error) {
	views := make(map[string]view, len(tensors))
	for _, t := range tensors {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		if !utf8.ValidString(t.Name) {
			return nil, fmt.Errorf("safetensors: tensor name %q is not valid UTF-8: %w", t.Name, ErrInvalid)
		}
		if _, dup := views[t.Name]; dup {
			return nil, fmt.Errorf("safetensors: duplicate tensor name %q: %w", t.Name, ErrInvalid)
		}
		shape := make([]uint64, len(t.Shape)) // non-nil: a scalar is "shape": []
		for i, d := range t.Shape {
			shape[i] = uint64(d)
		}
		views[t.Name] = view{dt: dtypeInfo[t.DType].lib, shape: shape, data: t.Data}
	}
	for k, v := range metadata {
		// JSON would replace invalid UTF-8 with U+FFFD: the file would not
		// read back as written.
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, fmt.Errorf("safetensors: metadata %q: %q is not valid UTF-8: %w", k, v, ErrInvalid)
		}
	}
	return views, nil
}

// Write writes tensors and metadata (which may be nil) in the safetensors
// format. Tensors go to the data section by decreasing element size, then by
// name, whatever their order in the slice; the output depends only on the
// tensors and metadata given. Names must be unique, non-empty, valid UTF-8
// and not "__metadata__".
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	views, err := prepare(tensors, metadata)
	if err != nil {
		return err
	}
	if len(metadata) == 0 {
		metadata = nil
	}
	if err := st.SerializeToWriter(views, metadata, w); err != nil {
		return fmt.Errorf("safetensors: writing: %w", err)
	}
	return nil
}

// writeHook lets tests inject write failures into WriteFile.
var writeHook = func(w io.Writer) io.Writer { return w }

// WriteFile writes the file at path atomically: into a temporary file in the
// same directory, synced, closed and renamed over path, then the directory
// synced. Readers see the old file or the new one, never a partial one; on
// any error the temporary file is removed and an existing file at path is
// left as it was. A new file gets mode 0644, a replaced one keeps its mode.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) (err error) {
	if _, err := prepare(tensors, metadata); err != nil {
		return err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return fmt.Errorf("safetensors: %q names a directory: %w", path, ErrInvalid)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				tmp.Close()
			}
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(writeHook(tmp), 1<<20)
	if err := Write(bw, tensors, metadata); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	closed = true
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	// Without this the rename itself may not survive a crash.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("safetensors: syncing directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("safetensors: syncing directory %s: %w", dir, err)
	}
	return nil
}
