// Package safetensors reads and writes the safetensors format of Hugging
// Face (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header, then the data section.
//
// It backs galleon's model checkpoints, int8 checkpoints and PEFT LoRA
// adapter files, which must open in the Python ecosystem and must be safe to
// open when they come from elsewhere. Open (and Read, ReadFile) treat a file
// as hostile:
//   - only regular files are opened (a FIFO would block), non-blocking;
//   - the header length is bounded (16 MiB by default) and checked against
//     the file size before the header is read;
//   - the header is parsed by a one-pass parser of the format's fixed shape
//     into typed fields, so a maximal header costs a few times its size
//     (TestMaximalHeaderIsBounded), with arrays of at most 64 elements,
//     duplicate keys at any level, unknown fields and empty names refused;
//   - every size is an overflow-checked product, and the tensors must tile
//     the data section exactly: padding, holes and overlaps are refused
//     before any tensor data is read (TestOpenRefusesSparsePaddingCheaply);
//   - tensors are then read one at a time (Reader.Tensor, Reader.ReadInto),
//     so memory follows the tensors a caller asks for, not the file size.
//
// Every violation returns an error wrapping ErrCorrupt; no input makes Read
// panic (see FuzzRead).
//
// Writing (by github.com/nlpodyssey/safetensors's serializer) is
// deterministic: the data section holds tensors by decreasing
// element size, then by name (the order of the Python implementation, which
// keeps every tensor aligned to its element size), the JSON header has its
// keys sorted, and the header is padded with spaces to a multiple of 8
// bytes.
package safetensors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
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
// default options. It holds the whole data section in memory; Open reads
// tensor by tensor instead.
func ReadFile(path string) (*File, error) {
	r, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return out, nil
}

// Read reads and validates a safetensors file of size bytes from r. The
// returned tensors' Data slices share one buffer holding the data section
// (each is capped at its own end, so appending to one never overwrites
// another).
//
// Nothing is allocated from the header's claims: the header is parsed and
// checked to tile exactly the size-8-N bytes after it (no padding, hole or
// overlap) before the data section is allocated, and r must prove to hold
// size bytes first.
func Read(r io.ReaderAt, size int64, opts ReadOptions) (*File, error) {
	rd, err := NewReader(r, size, opts)
	if err != nil {
		return nil, err
	}
	return rd.ReadAll()
}

// Info describes one tensor of a file without its data.
type Info struct {
	Name  string  // unique within the file
	DType DType   // element type
	Shape []int64 // dimensions; empty for a scalar
	// Offset is where the tensor's bytes start, counted from the start of
	// the data section; Size is their number.
	Offset, Size int64
}

// Reader is an open safetensors file whose header has been validated
// against the file's size. Tensors are read one at a time, so memory
// follows the tensors a caller asks for, never what the header claims.
// A Reader is safe for concurrent use by several goroutines.
type Reader struct {
	r      io.ReaderAt
	closer io.Closer
	name   string
	base   int64 // file offset of the data section
	infos  []Info
	index  map[string]int
	// Metadata is the header's __metadata__ map; never nil.
	Metadata map[string]string
}

// Open opens the safetensors file at path and validates its header against
// the file's size. It refuses what is not a regular file before opening it
// (a FIFO would block the open), and never allocates more than the bounded
// header. The caller must Close the Reader.
func Open(path string) (*Reader, error) {
	return OpenOptions(path, ReadOptions{})
}

// OpenOptions is Open with options.
func OpenOptions(path string, opts ReadOptions) (*Reader, error) {
	f, fi, err := OpenRegular(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	rd, err := NewReader(f, fi.Size(), opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	rd.closer = f
	rd.name = path
	return rd, nil
}

// ErrNotRegular is wrapped by the errors of OpenRegular for a path that
// is not a regular file (a directory, FIFO, device or socket), together
// with ErrInvalid.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens path for reading only if it is a regular file. It
// checks with a stat before opening, opens non-blocking (so a FIFO swapped
// in between the two cannot hang the open), and checks the opened file
// again. Loaders of every galleon format use it.
func OpenRegular(path string) (*os.File, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s (mode %v): %w: %w", path, fi.Mode(), ErrNotRegular, ErrInvalid)
	}
	f, err := openNonblock(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err = f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s (mode %v): %w: %w", path, fi.Mode(), ErrNotRegular, ErrInvalid)
	}
	return f, fi, nil
}

// NewReader validates the header of a safetensors file of size bytes held
// by r. The header length is checked against opts.MaxHeaderSize and size
// before it is read, the header is parsed without decoding it into generic
// maps (so its cost is a small multiple of its size), and the tensors must
// tile exactly the bytes after it: a padded, truncated or overlapping file
// is refused here, before any tensor data is read.
func NewReader(r io.ReaderAt, size int64, opts ReadOptions) (*Reader, error) {
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
	rd, err := parseHeader(header, 8+int64(n), size-8-int64(n))
	if err != nil {
		return nil, err
	}
	// Prove the reader really holds size bytes: a caller's size is only a
	// claim about r.
	if size > 8+int64(n) {
		var last [1]byte
		if err := readFull(r, last[:], size-1); err != nil {
			return nil, err
		}
	}
	rd.r = r
	return rd, nil
}

// Close releases the file of a Reader made by Open; it is a no-op for one
// made by NewReader.
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	c := r.closer
	r.closer = nil
	return c.Close()
}

// Tensors returns the descriptions of the file's tensors, in the order of
// their data in the file (zero-sized tensors, which share an offset, by
// name).
func (r *Reader) Tensors() []Info {
	out := make([]Info, len(r.infos))
	for i, in := range r.infos {
		in.Shape = cloneShape(in.Shape)
		out[i] = in
	}
	return out
}

// DataSize returns the size of the data section: the sum of the tensors'
// sizes.
func (r *Reader) DataSize() int64 {
	if len(r.infos) == 0 {
		return 0
	}
	last := r.infos[len(r.infos)-1]
	return last.Offset + last.Size
}

// Info returns the description of the tensor called name.
func (r *Reader) Info(name string) (Info, bool) {
	i, ok := r.index[name]
	if !ok {
		return Info{}, false
	}
	in := r.infos[i]
	in.Shape = cloneShape(in.Shape)
	return in, true
}

// Tensor reads the tensor called name into a new buffer of its size.
func (r *Reader) Tensor(name string) (Tensor, error) {
	in, ok := r.Info(name)
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: no tensor %q: %w", name, ErrInvalid)
	}
	data := make([]byte, in.Size)
	if err := r.ReadInto(name, data); err != nil {
		return Tensor{}, err
	}
	return Tensor{Name: in.Name, DType: in.DType, Shape: in.Shape, Data: data}, nil
}

// ReadInto reads the bytes of the tensor called name into dst, which must
// have exactly the tensor's size.
func (r *Reader) ReadInto(name string, dst []byte) error {
	i, ok := r.index[name]
	if !ok {
		return fmt.Errorf("safetensors: no tensor %q: %w", name, ErrInvalid)
	}
	in := r.infos[i]
	if int64(len(dst)) != in.Size {
		return fmt.Errorf("safetensors: tensor %q has %d bytes, buffer %d: %w", name, in.Size, len(dst), ErrInvalid)
	}
	return readFull(r.r, dst, r.base+in.Offset)
}

// Float32s reads the tensor called name, F32, F16 or BF16, widened exactly
// to float32.
func (r *Reader) Float32s(name string) ([]float32, error) {
	t, err := r.Tensor(name)
	if err != nil {
		return nil, err
	}
	return t.Float32s()
}

// ReadAll reads every tensor into one buffer of the data section's size.
func (r *Reader) ReadAll() (*File, error) {
	size := r.DataSize()
	if uint64(size) > uint64(math.MaxInt) {
		return nil, fmt.Errorf("safetensors: data section of %d bytes does not fit in memory: %w", size, ErrInvalid)
	}
	buf := make([]byte, size)
	if err := readFull(r.r, buf, r.base); err != nil {
		return nil, err
	}
	f := &File{Tensors: make([]Tensor, len(r.infos)), Metadata: maps.Clone(r.Metadata)}
	for i, in := range r.infos {
		f.Tensors[i] = Tensor{Name: in.Name, DType: in.DType, Shape: cloneShape(in.Shape),
			Data: buf[in.Offset : in.Offset+in.Size : in.Offset+in.Size]}
	}
	return f, nil
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

// Source is a tensor for WriteStream: its name, dtype and shape are known
// up front (they make the header), its bytes come from Data, called once,
// when the tensor's turn in the data section comes. A caller saving a large
// model thus holds one tensor's bytes at a time, never a second copy of the
// model.
type Source struct {
	Name  string  // unique, non-empty, valid UTF-8, not "__metadata__"
	DType DType   // element type
	Shape []int64 // dimensions; empty for a scalar
	Data  func() ([]byte, error)
}

// lazyView adapts a Source to the library's writer, which asks for the data
// only while writing the data section.
type lazyView struct {
	src  Source
	dt   st.DType
	sh   []uint64
	size int64
	err  *error
}

func (v lazyView) DType() st.DType { return v.dt }
func (v lazyView) Shape() []uint64 { return v.sh }
func (v lazyView) DataLen() uint64 { return uint64(v.size) }
func (v lazyView) Data() []byte {
	if *v.err != nil {
		return nil
	}
	b, err := v.src.Data()
	if err == nil && int64(len(b)) != v.size {
		err = fmt.Errorf("safetensors: tensor %q: Data gave %d bytes, %v%v needs %d: %w",
			v.src.Name, len(b), v.src.DType, v.src.Shape, v.size, ErrInvalid)
	}
	if err != nil {
		*v.err = err
		return nil
	}
	return b
}

// WriteStream writes the tensors of sources and metadata (which may be
// nil): the header first, then each tensor's bytes as its Data returns
// them, in the same order and format as Write. An error of a Data function
// or a wrong length stops the write and is returned; w then holds a
// partial file (WriteFileStream removes it).
func WriteStream(w io.Writer, sources []Source, metadata map[string]string) error {
	var dataErr error
	views := make(map[string]lazyView, len(sources))
	for _, src := range sources {
		t := Tensor{Name: src.Name, DType: src.DType, Shape: src.Shape}
		size, err := t.byteSize()
		if err != nil {
			return err
		}
		if t.Name == "" || t.Name == metadataKey {
			return fmt.Errorf("safetensors: invalid tensor name %q: %w", t.Name, ErrInvalid)
		}
		if !utf8.ValidString(src.Name) {
			return fmt.Errorf("safetensors: tensor name %q is not valid UTF-8: %w", src.Name, ErrInvalid)
		}
		if _, dup := views[src.Name]; dup {
			return fmt.Errorf("safetensors: duplicate tensor name %q: %w", src.Name, ErrInvalid)
		}
		if src.Data == nil {
			return fmt.Errorf("safetensors: tensor %q has no Data function: %w", src.Name, ErrInvalid)
		}
		shape := make([]uint64, len(src.Shape))
		for i, d := range src.Shape {
			shape[i] = uint64(d)
		}
		views[src.Name] = lazyView{src: src, dt: dtypeInfo[src.DType].lib, sh: shape, size: size, err: &dataErr}
	}
	if _, err := prepare(nil, metadata); err != nil {
		return err
	}
	if len(metadata) == 0 {
		metadata = nil
	}
	ew := &errWriter{w: w, err: &dataErr}
	if err := st.SerializeToWriter(views, metadata, ew); err != nil {
		return fmt.Errorf("safetensors: writing: %w", err)
	}
	return dataErr
}

// errWriter stops writing once a Source failed, so that nothing after the
// failure reaches w.
type errWriter struct {
	w   io.Writer
	err *error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if *e.err != nil {
		return 0, *e.err
	}
	return e.w.Write(p)
}

// writeHook lets tests inject write failures into WriteFile.
var writeHook = func(w io.Writer) io.Writer { return w }

// WriteFile writes the file at path atomically: see WriteFileStream.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	if _, err := prepare(tensors, metadata); err != nil {
		return err
	}
	return WriteAtomic(path, func(w io.Writer) error { return Write(w, tensors, metadata) })
}

// WriteFileStream writes sources (see WriteStream) to path atomically:
// into the temporary file TempName(path), synced, closed and renamed over
// path, then the directory synced. Readers see the old file or the new
// one, never a partial one; on any error the temporary file is removed and
// an existing file at path is left as it was. A temporary file left by a
// crash has the same name and is replaced by the next save, so crashes
// never accumulate leftovers. A path that is a directory is refused before
// anything is written. A new file gets mode 0644, a replaced one keeps its
// mode.
func WriteFileStream(path string, sources []Source, metadata map[string]string) error {
	return WriteAtomic(path, func(w io.Writer) error { return WriteStream(w, sources, metadata) })
}

// TempName is the temporary file that WriteFile and WriteFileStream write
// before renaming it over path: a hidden sibling, the same for every save
// of path.
func TempName(path string) string {
	dir, base := filepath.Split(path)
	return filepath.Join(dir, "."+base+".tmp")
}

// WriteAtomic runs write into TempName(path) and renames it over path, with
// WriteFileStream's guarantees (synced file and directory, one fixed
// temporary name per path, directories refused, mode kept). It serves any
// file a model or adapter directory holds, not only safetensors files.
func WriteAtomic(path string, write func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" || base == "." || base == ".." {
		return fmt.Errorf("safetensors: %q names a directory: %w", path, ErrInvalid)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("safetensors: %s is a directory: %w", path, ErrInvalid)
		}
		if fi.Mode().IsRegular() {
			mode = fi.Mode().Perm()
		}
	}
	name := TempName(path)
	// O_EXCL: a leftover of a crash (or of a concurrent save of the same
	// path, which then fails at its rename instead of renaming a file
	// being rewritten) is removed and replaced, never written through.
	tmp, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		if fi, lerr := os.Lstat(name); lerr == nil && !fi.Mode().IsRegular() {
			return fmt.Errorf("safetensors: temporary path %s exists and is not a regular file: %w", name, ErrInvalid)
		}
		os.Remove(name)
		tmp, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				tmp.Close()
			}
			os.Remove(name)
		}
	}()
	bw := bufio.NewWriterSize(writeHook(tmp), 1<<20)
	if err := write(bw); err != nil {
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
	if err := os.Rename(name, path); err != nil {
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
