package nn

// Helpers for writing custom gorgonia ops, shared by the ops of this package
// and those of attention, parallel, quant and lora.

import (
	"fmt"
	"hash"
	"hash/fnv"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// OutBuf is an op-owned output tensor, allocated on the first run and reused
// by the next ones, so a training step does not allocate its activations and
// gradients again. The zero value is ready to use; an OutBuf must not be
// copied after first use.
//
// The tensor header is checked on every call and rebuilt (never the memory)
// if someone changed it: gorgonia's UnbindAll returns the tensors it holds to
// tensor's pool, which may hand the header out again with another shape or
// backing array while the op still holds it.
type OutBuf struct {
	data  []float32 // owned memory; nil after View
	shape []int     // shape of t, reused to keep Get allocation-free
	t     *tensor.Dense
}

// Get returns the buffer as an r×c tensor, or as a vector of r elements when
// c < 0. Its contents are those the previous run left when the shape is the
// same, zeros when the buffer was (re)allocated.
func (b *OutBuf) Get(r, c int) *tensor.Dense {
	s := [2]int{r, c}
	if c < 0 {
		return b.GetShape(s[:1]...)
	}
	return b.GetShape(s[:]...)
}

// GetShape returns the buffer as a tensor of the given shape, of any rank,
// as Get does for matrices and vectors.
func (b *OutBuf) GetShape(shape ...int) *tensor.Dense {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if b.data == nil || len(b.data) != n {
		b.data = make([]float32, n)
		b.t = nil
	}
	return b.wrap(b.data, shape)
}

// Used reports whether Get or View has run, i.e. whether the buffer holds
// an output (an op reading another op's buffer checks it ran first).
func (b *OutBuf) Used() bool { return b.t != nil }

// View returns an r×c tensor over data, memory the op does not own (e.g. a
// layer's weights), reusing the header while data stays the same slice. The
// next Get allocates the buffer's own memory again.
func (b *OutBuf) View(data []float32, r, c int) *tensor.Dense {
	b.data = nil
	s := [2]int{r, c}
	return b.wrap(data, s[:])
}

// wrap returns b.t if it is still a float32 tensor of this exact shape over
// exactly data, and otherwise a new header over data.
func (b *OutBuf) wrap(data []float32, shape []int) *tensor.Dense {
	if b.t != nil && b.intact(data, shape) {
		return b.t
	}
	b.shape = append(b.shape[:0], shape...)
	b.t = tensor.New(tensor.WithShape(b.shape...), tensor.WithBacking(data))
	return b.t
}

func (b *OutBuf) intact(data []float32, shape []int) bool {
	t := b.t
	if t.Dtype() != tensor.Float32 {
		return false
	}
	s := t.Shape()
	if len(s) != len(shape) {
		return false
	}
	for i := range s {
		if s[i] != shape[i] {
			return false
		}
	}
	d := t.Float32s()
	return len(d) == len(data) && (len(d) == 0 || &d[0] == &data[0])
}

// Float32s returns the n float32s of v, which must be a dense, contiguous
// float32 tensor of n elements: the ops read and write its backing array
// directly. Its errors say which package (pkg), op and input (what) the value
// was, and wrap sentinel, or ErrShape when sentinel is nil, so that callers
// can test them with errors.Is against their own package's error.
func Float32s(pkg, op, what string, v G.Value, n int, sentinel error) ([]float32, error) {
	if sentinel == nil {
		sentinel = ErrShape
	}
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("%s: %s: %s is a %T, want *tensor.Dense: %w", pkg, op, what, v, sentinel)
	}
	if d.Dtype() != tensor.Float32 {
		return nil, fmt.Errorf("%s: %s: %s has dtype %v, want float32: %w", pkg, op, what, d.Dtype(), sentinel)
	}
	if d.RequiresIterator() {
		return nil, fmt.Errorf("%s: %s: %s is a non-contiguous view: %w", pkg, op, what, sentinel)
	}
	data := d.Float32s()
	if d.Shape().TotalSize() != n || len(data) < n {
		return nil, fmt.Errorf("%s: %s: %s has shape %v, want %d elements: %w", pkg, op, what, d.Shape(), n, sentinel)
	}
	return data[:n], nil
}

// Do is the body of an op's Do method for an r×c output (a vector of r
// elements when c < 0) held in b: it runs compute on the buffer's memory and
// returns the buffer, or compute's error and a nil value. The ops write
//
//	return op.out.Do(r, c, func(dst []float32) error { return op.compute(dst, in) })
//
// so that Do and UsePreallocDo (see PreallocDo) share one compute method.
// compute does not escape: the literal stays on the caller's stack and a
// call allocates nothing more than compute does.
func (b *OutBuf) Do(r, c int, compute func(dst []float32) error) (G.Value, error) {
	t := b.Get(r, c)
	if err := compute(t.Float32s()); err != nil {
		return nil, err
	}
	return t, nil
}

// PreallocDo is the body of an op's UsePreallocDo method: it checks prealloc
// with Float32s(pkg, op, "prealloc", prealloc, n, sentinel), so its errors are
// those Float32s gives, runs compute on its n float32s and returns prealloc,
// or the first error and a nil value. As for OutBuf.Do, compute does not
// escape.
func PreallocDo(pkg, op string, prealloc G.Value, n int, sentinel error, compute func(dst []float32) error) (G.Value, error) {
	dst, err := Float32s(pkg, op, "prealloc", prealloc, n, sentinel)
	if err != nil {
		return nil, err
	}
	if err := compute(dst); err != nil {
		return nil, err
	}
	return prealloc, nil
}

// OpDefaults gives an op, by embedding, the G.Op methods that every custom
// op of galleon answers the same way.
type OpDefaults struct{}

// ReturnsPtr is false: outputs are fresh values that no consumer may assume
// to be one of its inputs.
func (OpDefaults) ReturnsPtr() bool { return false }

// CallsExtern is false: no cgo. (True would also make the compiler insert an
// alloc instruction that allocates afresh after every Reset.)
func (OpDefaults) CallsExtern() bool { return false }

// OverwritesInput is -1: inputs are never written.
func (OpDefaults) OverwritesInput() int { return -1 }

// OpHash turns an op's WriteHash into its Hashcode (FNV-1a, 32 bits), which
// gorgonia uses to merge nodes that compute the same thing: ops that must
// never merge write something unique (e.g. a serial number) in WriteHash.
func OpHash(op interface{ WriteHash(hash.Hash) }) uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}

// opSerial numbers op instances, across every package that builds ops with
// NewOpBase. Each op writes its number into its hash so gorgonia never
// merges two of them: ops that look alike may read different IDs holders,
// layers or saved state.
var opSerial atomic.Uint64

// OpBase gives an op, by embedding, OpDefaults and a serial number unique to
// the instance (across packages), for its WriteHash.
type OpBase struct {
	OpDefaults
	serial uint64
}

// NewOpBase returns an OpBase with the next serial number.
func NewOpBase() OpBase { return OpBase{serial: opSerial.Add(1)} }

// Serial is the instance's number, to write in WriteHash.
func (b OpBase) Serial() uint64 { return b.serial }

// MatrixType is the type of a float32 matrix node, for ops' Type methods.
func MatrixType() G.TensorType { return G.TensorType{Dims: 2, Of: tensor.Float32} }

// VectorType is the type of a float32 vector node.
func VectorType() G.TensorType { return G.TensorType{Dims: 1, Of: tensor.Float32} }

// gradOp is the backward op for one input (its target) of a forward op. Its
// inputs are whatever values the gradient needs, including the forward node
// when the forward op's saved state is read, so the tape runs it after the
// forward op.
type gradOp struct {
	OpBase
	pkg    string // the package of the forward op, for the hash, String and errors
	name   string // e.g. "LayerNormGradX"
	fwd    uint64 // serial of the forward op, for the hash and String
	target *G.Node
	arity  int
	typ    hm.Type
	r, c   int // output shape (r, c), or (r) when c < 0
	run    func(dst []float32, in []G.Value) error

	out, placeholder OutBuf
}

// NewGrad adds to target's graph the backward op that computes target's
// gradient, an r×c matrix (a vector of r when c < 0), by calling run on the
// values of inputs at each run: run writes the whole gradient into dst (the
// op's own buffer, reused across runs). inputs are whatever run reads; pass
// the forward node among them when run reads state the forward op saved,
// so the tape runs it after the forward op. When G.Grad gave target no
// derivative (a frozen weight, the data), the op does no work and returns a
// 1×1 placeholder, which nothing reads. pkg and name (e.g. "lora",
// "DownGradX") name the op in its hash, String and errors; fwd is the
// forward op's Serial. This is the backward op of every op of this package
// and of lora's.
func NewGrad(pkg, name string, fwd uint64, target *G.Node, r, c int, run func(dst []float32, in []G.Value) error, inputs ...*G.Node) (*G.Node, error) {
	types := make([]hm.Type, 0, len(inputs)+1)
	for _, in := range inputs {
		types = append(types, in.Type())
	}
	if c >= 0 {
		types = append(types, MatrixType())
	} else {
		types = append(types, VectorType())
	}
	op := &gradOp{OpBase: NewOpBase(), pkg: pkg, name: name, fwd: fwd, target: target, arity: len(inputs), typ: hm.NewFnType(types...), r: r, c: c, run: run}
	n, err := G.ApplyOp(op, inputs...)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", pkg, name, err)
	}
	return n, nil
}

// needed reports whether G.Grad gave the target a derivative: it does for
// the nodes passed to it and every node between them and the cost, and for
// no other. A frozen weight (or the data) has none, and its gradient is then
// never read, so it is not computed.
func (op *gradOp) needed() bool { return op.target.Deriv() != nil }

// Arity is the number of values the gradient reads.
func (op *gradOp) Arity() int { return op.arity }

// Type is the function type from the inputs' types to the gradient's.
func (op *gradOp) Type() hm.Type { return op.typ }

// InferShape returns the target's shape.
func (op *gradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	if op.c >= 0 {
		return tensor.Shape{op.r, op.c}, nil
	}
	return tensor.Shape{op.r}, nil
}

// Do computes the gradient into the op's own buffer, or returns a 1×1
// placeholder without computing when the target needs no gradient.
func (op *gradOp) Do(in ...G.Value) (G.Value, error) {
	if !op.needed() {
		return op.placeholder.Get(1, 1), nil
	}
	return op.out.Do(op.r, op.c, func(dst []float32) error { return op.run(dst, in) })
}

// UsePreallocDo computes the gradient into prealloc.
func (op *gradOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	if !op.needed() {
		return op.placeholder.Get(1, 1), nil
	}
	n := op.r
	if op.c >= 0 {
		n *= op.c
	}
	return PreallocDo(op.pkg, op.name, prealloc, n, ErrShape, func(dst []float32) error { return op.run(dst, in) })
}

// WriteHash identifies the instance.
func (op *gradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "%s.%s#%d(fwd#%d, %d×%d)", op.pkg, op.name, op.serial, op.fwd, op.r, op.c)
}

// Hashcode hashes WriteHash.
func (op *gradOp) Hashcode() uint32 { return OpHash(op) }

// String names the op in graph dumps.
func (op *gradOp) String() string { return fmt.Sprintf("%s.%s(fwd#%d)", op.pkg, op.name, op.fwd) }

// AllDiff is the DiffWRT of an op differentiable in all n of its inputs.
func AllDiff(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = true
	}
	return d
}
