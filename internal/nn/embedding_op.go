package nn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

type embeddingOp struct {
	OpBase
	ids        *IDs
	B, T       int // ids' sizes when the graph was built
	V, C, Tmax int
	noPos      bool // TokenEmbedding: no position table (Tmax is 0)
	out        OutBuf
}

// Embedding adds out[b·T+t] = wte[ids[b·T+t]] + wpe[t] to the graph: wte
// [V, C], wpe [Tmax, C] with ids.T ≤ Tmax; the result is [ids.B·ids.T, C].
// ids is read at every run; an id outside [0, V) makes the run fail with an
// error wrapping ErrRange. Gradients scatter-add into wte and wpe.
func Embedding(wte, wpe *G.Node, ids *IDs) (*G.Node, error) {
	const fn = "Embedding"
	if err := ids.check(fn); err != nil {
		return nil, err
	}
	ws, err := nodeShape(fn, "wte", wte, 2)
	if err != nil {
		return nil, err
	}
	ps, err := nodeShape(fn, "wpe", wpe, 2)
	if err != nil {
		return nil, err
	}
	if ws[1] != ps[1] {
		return nil, shapeErr(fn, "wte %v and wpe %v have different widths", ws, ps)
	}
	if ids.T > ps[0] {
		return nil, shapeErr(fn, "sequence length %d exceeds wpe's %d positions", ids.T, ps[0])
	}
	op := &embeddingOp{OpBase: NewOpBase(), ids: ids, B: ids.B, T: ids.T, V: ws[0], C: ws[1], Tmax: ps[0]}
	return apply(fn, op, wte, wpe)
}

// TokenEmbedding adds out[r] = wte[ids[r]] to the graph: wte [V, C], no
// position table (models with rotary positions). The result is
// [ids.B·ids.T, C]; an id outside [0, V) makes the run fail with an error
// wrapping ErrRange. The gradient scatter-adds into wte.
func TokenEmbedding(wte *G.Node, ids *IDs) (*G.Node, error) {
	const fn = "TokenEmbedding"
	if err := ids.check(fn); err != nil {
		return nil, err
	}
	ws, err := nodeShape(fn, "wte", wte, 2)
	if err != nil {
		return nil, err
	}
	op := &embeddingOp{OpBase: NewOpBase(), ids: ids, B: ids.B, T: ids.T, V: ws[0], C: ws[1], noPos: true}
	return apply(fn, op, wte)
}

func (op *embeddingOp) rows() int { return op.B * op.T }

func (op *embeddingOp) Arity() int {
	if op.noPos {
		return 1
	}
	return 2
}

func (op *embeddingOp) Type() hm.Type {
	if op.noPos {
		return hm.NewFnType(matrixType, matrixType)
	}
	return hm.NewFnType(matrixType, matrixType, matrixType)
}

func (op *embeddingOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows(), op.C}, nil
}

func (op *embeddingOp) compute(dst []float32, in []G.Value) error {
	const fn = "Embedding"
	if err := checkArity(fn, len(in), op.Arity()); err != nil {
		return err
	}
	if err := op.ids.check(fn); err != nil {
		return err
	}
	if op.ids.B != op.B || op.ids.T != op.T {
		return shapeErr(fn, "IDs resized from %d×%d to %d×%d after the graph was built", op.B, op.T, op.ids.B, op.ids.T)
	}
	wte, err := Float32s("nn", fn, "wte", in[0], op.V*op.C, ErrShape)
	if err != nil {
		return err
	}
	var wpe []float32
	if !op.noPos {
		if wpe, err = Float32s("nn", fn, "wpe", in[1], op.Tmax*op.C, ErrShape); err != nil {
			return err
		}
	}
	if err := checkIDs(fn, op.ids.Data, op.V); err != nil {
		return err
	}
	embeddingForward(dst, wte, wpe, op.ids.Data, op.T, op.C, 0)
	return nil
}

// Do computes the embedding into the op's own buffer.
func (op *embeddingOp) Do(in ...G.Value) (G.Value, error) {
	return op.out.Do(op.rows(), op.C, func(dst []float32) error { return op.compute(dst, in) })
}

// UsePreallocDo computes the embedding into prealloc.
func (op *embeddingOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return PreallocDo("nn", "Embedding", prealloc, op.rows()*op.C, ErrShape, func(dst []float32) error { return op.compute(dst, in) })
}

func (op *embeddingOp) DiffWRT(n int) []bool {
	if op.noPos {
		return []bool{true}
	}
	return []bool{true, true}
}

// SymDiff builds one scatter-add per table; the ids are those of the run.
func (op *embeddingOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, checkArity("Embedding.SymDiff", len(inputs), op.Arity())
	}
	rows, C := op.rows(), op.C
	dwte, err := newGrad("EmbeddingGradWte", op.serial, inputs[0], op.V, C, func(dst []float32, in []G.Value) error {
		dy, err := Float32s("nn", "EmbeddingGradWte", "dy", in[0], rows*C, ErrShape)
		if err != nil {
			return err
		}
		if len(op.ids.Data) != rows {
			return shapeErr("EmbeddingGradWte", "IDs resized during the run")
		}
		if err := checkIDs("EmbeddingGradWte", op.ids.Data, op.V); err != nil {
			return err
		}
		clear(dst)
		embeddingBackwardWte(dst, dy, op.ids.Data, C)
		return nil
	}, grad)
	if err != nil {
		return nil, err
	}
	if op.noPos {
		return G.Nodes{dwte}, nil
	}
	dwpe, err := newGrad("EmbeddingGradWpe", op.serial, inputs[1], op.Tmax, C, func(dst []float32, in []G.Value) error {
		dy, err := Float32s("nn", "EmbeddingGradWpe", "dy", in[0], rows*C, ErrShape)
		if err != nil {
			return err
		}
		clear(dst)
		embeddingBackwardWpe(dst, dy, rows, op.T, C, 0)
		return nil
	}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dwte, dwpe}, nil
}

func (op *embeddingOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.Embedding#%d(V=%d, C=%d, Tmax=%d, noPos=%t, B=%d, T=%d, ids=%p)", op.serial, op.V, op.C, op.Tmax, op.noPos, op.B, op.T, op.ids)
}

func (op *embeddingOp) Hashcode() uint32 { return OpHash(op) }

func (op *embeddingOp) String() string {
	return fmt.Sprintf("nn.Embedding(%d×%d)", op.B, op.T)
}
