package nn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

type ropeOp struct {
	OpBase
	rows, width    int
	heads, headDim int
	positions      *IDs
	invFreq        []float32
	out            OutBuf
}

// RoPE adds rotary position embeddings (RopeForward: Hugging Face's
// rotate-half convention) of x [rows, width] to the graph: the first heads
// heads of headDim columns of each row are rotated by the row's position,
// the rest is passed through, so one op rotates separate q or k (heads =
// all of them) or the q and k of a packed [q | k | v] row. positions holds
// one position per row (rows = B·T; SequencePositions builds them) and is
// read at every run, like token ids; invFreq (from RopeFreqs) is copied. The
// gradient is the inverse rotation.
func RoPE(x *G.Node, positions *IDs, invFreq []float32, heads, headDim int) (*G.Node, error) {
	const fn = "RoPE"
	if err := positions.check(fn); err != nil {
		return nil, err
	}
	s, err := nodeShape(fn, "x", x, 2)
	if err != nil {
		return nil, err
	}
	if s[0] != len(positions.Data) {
		return nil, shapeErr(fn, "x %v for %d×%d positions", s, positions.B, positions.T)
	}
	if headDim <= 0 || headDim%2 != 0 || heads <= 0 || heads*headDim > s[1] {
		return nil, shapeErr(fn, "%d heads of %d (even) do not fit in x %v", heads, headDim, s)
	}
	if len(invFreq) != headDim/2 {
		return nil, shapeErr(fn, "%d inverse frequencies for head_dim %d", len(invFreq), headDim)
	}
	op := &ropeOp{OpBase: NewOpBase(), rows: s[0], width: s[1], heads: heads, headDim: headDim,
		positions: positions, invFreq: append([]float32(nil), invFreq...)}
	return apply(fn, op, x)
}

func (op *ropeOp) Arity() int { return 1 }

func (op *ropeOp) Type() hm.Type { return hm.NewFnType(matrixType, matrixType) }

func (op *ropeOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.width}, nil
}

// compute rotates in (by sign·angle) into dst after checking the positions,
// which the trainer may have refilled.
func (op *ropeOp) compute(fn string, dst []float32, v G.Value, sign float32) error {
	if err := op.positions.check(fn); err != nil {
		return err
	}
	x, err := Float32s("nn", fn, "x", v, op.rows*op.width, ErrShape)
	if err != nil {
		return err
	}
	if err := checkRope(fn, len(x), len(dst), op.width, op.heads, op.headDim, op.positions.Data, op.invFreq); err != nil {
		return err
	}
	rope(dst, x, op.width, op.heads, op.headDim, op.positions.Data, op.invFreq, sign, false)
	return nil
}

// Do rotates into the op's own buffer.
func (op *ropeOp) Do(in ...G.Value) (G.Value, error) {
	if err := checkArity("RoPE", len(in), 1); err != nil {
		return nil, err
	}
	return op.out.Do(op.rows, op.width, func(dst []float32) error { return op.compute("RoPE", dst, in[0], 1) })
}

// UsePreallocDo rotates into prealloc.
func (op *ropeOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	if err := checkArity("RoPE", len(in), 1); err != nil {
		return nil, err
	}
	return PreallocDo("nn", "RoPE", prealloc, op.rows*op.width, ErrShape, func(dst []float32) error { return op.compute("RoPE", dst, in[0], 1) })
}

func (op *ropeOp) DiffWRT(n int) []bool { return []bool{true} }

// SymDiff builds dx = R(−angle)·dy; it saves nothing, so it reads only dy.
func (op *ropeOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, checkArity("RoPE.SymDiff", len(inputs), 1)
	}
	dx, err := newGrad("RoPEGrad", op.serial, inputs[0], op.rows, op.width, func(dst []float32, in []G.Value) error {
		return op.compute("RoPEGrad", dst, in[0], -1)
	}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

func (op *ropeOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.RoPE#%d(%d×%d, heads=%d, hd=%d, pos=%p)", op.serial, op.rows, op.width, op.heads, op.headDim, op.positions)
}

func (op *ropeOp) Hashcode() uint32 { return OpHash(op) }

func (op *ropeOp) String() string {
	return fmt.Sprintf("nn.RoPE(heads=%d, hd=%d)", op.heads, op.headDim)
}
