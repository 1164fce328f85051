package nn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

type crossEntropyOp struct {
	OpBase
	targets *IDs
	rows, V int
	loss    G.F32     // the op's output value, reused by every run
	probs   []float32 // softmax saved by Do for the backward op of the same run
	rowLoss []float64 // per-row losses, summed in order after the parallel rows
	count   int       // rows counted in the mean, from the same run
}

// CrossEntropy adds the mean softmax cross-entropy of logits [B·T, V]
// against targets (read at every run) to the graph, as a float32 scalar.
// Rows whose target is IgnoreIndex are left out of the loss and of the
// mean; a target outside [0, V) makes the run fail with an error wrapping
// ErrRange. The forward op saves the softmax for its backward op.
func CrossEntropy(logits *G.Node, targets *IDs) (*G.Node, error) {
	const fn = "CrossEntropy"
	if err := targets.check(fn); err != nil {
		return nil, err
	}
	s, err := nodeShape(fn, "logits", logits, 2)
	if err != nil {
		return nil, err
	}
	if s[0] != len(targets.Data) {
		return nil, shapeErr(fn, "logits %v for %d×%d targets", s, targets.B, targets.T)
	}
	op := &crossEntropyOp{OpBase: NewOpBase(), targets: targets, rows: s[0], V: s[1]}
	return apply(fn, op, logits)
}

func (op *crossEntropyOp) Arity() int { return 1 }

func (op *crossEntropyOp) Type() hm.Type { return hm.NewFnType(matrixType, tensor.Float32) }

func (op *crossEntropyOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

// Do computes the loss and saves the softmax. The returned value is the op's
// own scalar, overwritten by the next run.
func (op *crossEntropyOp) Do(in ...G.Value) (G.Value, error) {
	const fn = "CrossEntropy"
	if err := checkArity(fn, len(in), 1); err != nil {
		return nil, err
	}
	if err := op.targets.check(fn); err != nil {
		return nil, err
	}
	if len(op.targets.Data) != op.rows {
		return nil, shapeErr(fn, "%d targets for %d rows of logits", len(op.targets.Data), op.rows)
	}
	logits, err := Float32s("nn", fn, "logits", in[0], op.rows*op.V, ErrShape)
	if err != nil {
		return nil, err
	}
	count, err := checkTargets(fn, op.targets.Data, op.V)
	if err != nil {
		return nil, err
	}
	if op.probs == nil {
		op.probs = make([]float32, op.rows*op.V)
		op.rowLoss = make([]float64, op.rows)
	}
	op.count = count
	op.loss = G.F32(crossEntropyForward(op.probs, logits, op.targets.Data, op.V, count, op.rowLoss))
	return &op.loss, nil
}

func (op *crossEntropyOp) DiffWRT(n int) []bool { return []bool{true} }

// SymDiff builds dlogits = (softmax − onehot)·g/count from the saved softmax;
// it reads the loss node only to run after the forward op.
func (op *crossEntropyOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, checkArity("CrossEntropy.SymDiff", len(inputs), 1)
	}
	d, err := newGrad("CrossEntropyGrad", op.serial, inputs[0], op.rows, op.V, func(dst []float32, in []G.Value) error {
		g, err := scalarF32("CrossEntropyGrad", in[1])
		if err != nil {
			return err
		}
		if len(op.targets.Data) != op.rows {
			return shapeErr("CrossEntropyGrad", "targets resized during the run")
		}
		crossEntropyBackward(dst, op.probs, op.targets.Data, op.V, op.count, g, false)
		return nil
	}, output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{d}, nil
}

func (op *crossEntropyOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "nn.CrossEntropy#%d(rows=%d, V=%d, targets=%p)", op.serial, op.rows, op.V, op.targets)
}

func (op *crossEntropyOp) Hashcode() uint32 { return OpHash(op) }

func (op *crossEntropyOp) String() string { return fmt.Sprintf("nn.CrossEntropy(V=%d)", op.V) }
