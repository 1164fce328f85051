package model

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The Llama family projects q, k and v with three linear modules (so that
// adapters target them by name), while attention's fused op reads one
// packed [rows, q|k|v] matrix. packColumns joins the three without
// gorgonia's generic Concat (which builds broadcasting slices in backward):
// one copy forward, and one column slice per input backward.

var matrixType = G.TensorType{Dims: 2, Of: tensor.Float32}

// packColumns adds [x₀ | x₁ | …] to the graph: matrices with equal rows
// joined along the columns.
func packColumns(xs ...*G.Node) (*G.Node, error) {
	if len(xs) == 0 {
		return nil, fmt.Errorf("model: packColumns: no input")
	}
	op := &packOp{}
	for i, x := range xs {
		s := x.Shape()
		if x.Dtype() != tensor.Float32 || len(s) != 2 || (i > 0 && s[0] != op.rows) {
			return nil, fmt.Errorf("model: packColumns: input %d is %v of %v, want float32 matrices of equal rows", i, s, x.Dtype())
		}
		op.rows = s[0]
		op.widths = append(op.widths, s[1])
		op.total += s[1]
	}
	return G.ApplyOp(op, xs...)
}

type packOp struct {
	nn.OpDefaults
	rows, total int
	widths      []int
	out         nn.OutBuf
}

func (op *packOp) Arity() int { return len(op.widths) }

func (op *packOp) Type() hm.Type {
	ts := make([]hm.Type, len(op.widths)+1)
	for i := range ts {
		ts[i] = matrixType
	}
	return hm.NewFnType(ts...)
}

func (op *packOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.total}, nil
}

func (op *packOp) compute(dst []float32, in []G.Value) error {
	if len(in) != len(op.widths) {
		return fmt.Errorf("model: packColumns: %d inputs, want %d", len(in), len(op.widths))
	}
	off := 0
	for i, v := range in {
		w := op.widths[i]
		x, err := nn.Float32s("model", "packColumns", fmt.Sprintf("input %d", i), v, op.rows*w, nil)
		if err != nil {
			return err
		}
		for r := 0; r < op.rows; r++ {
			copy(dst[r*op.total+off:r*op.total+off+w], x[r*w:(r+1)*w])
		}
		off += w
	}
	return nil
}

func (op *packOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.total, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *packOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return nn.PreallocDo("model", "packColumns", prealloc, op.rows*op.total, nil, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *packOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "model.packColumns(rows=%d, widths=%v)", op.rows, op.widths)
}

func (op *packOp) Hashcode() uint32 { return nn.OpHash(op) }

func (op *packOp) String() string { return fmt.Sprintf("packColumns%v", op.widths) }

func (op *packOp) DiffWRT(n int) []bool {
	return nn.AllDiff(n)
}

// SymDiff slices each input's columns out of the packed gradient.
func (op *packOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	grads := make(G.Nodes, len(inputs))
	off := 0
	for i, w := range op.widths {
		g, err := G.ApplyOp(&columnsOp{rows: op.rows, total: op.total, off: off, width: w}, grad)
		if err != nil {
			return nil, err
		}
		grads[i] = g
		off += w
	}
	return grads, nil
}

// columnsOp copies columns [off, off+width) of a [rows, total] matrix.
type columnsOp struct {
	nn.OpDefaults
	rows, total, off, width int
	out                     nn.OutBuf
}

func (op *columnsOp) Arity() int { return 1 }

func (op *columnsOp) Type() hm.Type { return hm.NewFnType(matrixType, matrixType) }

func (op *columnsOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.width}, nil
}

func (op *columnsOp) compute(dst []float32, in []G.Value) error {
	if len(in) != 1 {
		return fmt.Errorf("model: columns: %d inputs, want 1", len(in))
	}
	x, err := nn.Float32s("model", "columns", "input", in[0], op.rows*op.total, nil)
	if err != nil {
		return err
	}
	for r := 0; r < op.rows; r++ {
		copy(dst[r*op.width:(r+1)*op.width], x[r*op.total+op.off:r*op.total+op.off+op.width])
	}
	return nil
}

func (op *columnsOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows, op.width, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *columnsOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return nn.PreallocDo("model", "columns", prealloc, op.rows*op.width, nil, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *columnsOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "model.columns(rows=%d, total=%d, off=%d, width=%d)", op.rows, op.total, op.off, op.width)
}

func (op *columnsOp) Hashcode() uint32 { return nn.OpHash(op) }

func (op *columnsOp) String() string { return fmt.Sprintf("columns[%d:%d]", op.off, op.off+op.width) }
