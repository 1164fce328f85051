package parallel

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
	"github.com/galleon-ml/galleon/model"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Stage 3 gathers the weights of each linear layer only while the layer
// computes. The trainer replaces every dense linear layer whose weight and
// bias it trains by a zeroLinear (model.SetLinear) before building its
// replica. In the graph, a zeroLinear is one op of x alone (its weight and
// bias are not graph nodes): its forward all-gathers the layer's part of the
// flat parameters in place, computes y = x·W + b, and gives the other ranks'
// pages of the layer back; its backward op gathers again, computes dx, adds
// the micro-batch weight × dW and db into the replica's gradient buffer (as
// the replica does for the gradients of graph nodes), and gives the pages
// back. The rest of the parameters (embeddings, layer norms) is gathered for
// the whole step. The tape runs the ops of identical graphs in the same
// order on every rank, so the collectives match; the values gathered are
// those the whole-model gather would have given, and the products run on
// the same kernels, so the result is bit for bit the same.

// zeroLinear is a dense linear layer whose weight lives sharded.
type zeroLinear struct {
	t      *Trainer
	inner  *model.DenseLinear
	name   string
	unit   span // the layer's weight and bias in the flat trainable vector
	in     int
	out    int
	weight span // W in the flat vector
	bias   span // b (empty without a bias)
}

// Dims returns the input and output widths.
func (l *zeroLinear) Dims() (in, out int) { return l.in, l.out }

// Forward runs the layer without a graph on the weights as they are (the
// other ranks' parts read as zeros between steps: see Trainer.GatherParams).
func (l *zeroLinear) Forward(y, x []float32, rows int) error { return l.inner.Forward(y, x, rows) }

// BuildGraph adds the layer as one op of x.
func (l *zeroLinear) BuildGraph(gc *model.GraphContext, x *G.Node) (*G.Node, error) {
	s := x.Shape()
	if len(s) != 2 || s[1] != l.in {
		return nil, fmt.Errorf("parallel: layer %s: input of shape %v, want [rows, %d]", l.name, s, l.in)
	}
	op := &zeroLinearOp{l: l, rows: s[0]}
	y, err := G.ApplyOp(op, x)
	if err != nil {
		return nil, fmt.Errorf("parallel: layer %s: %w", l.name, err)
	}
	return y, nil
}

// gather all-gathers the layer's part of the flat parameters.
func (l *zeroLinear) gather() error {
	w := l.t.workers[0]
	ps := l.t.model.Trainable().Data
	if err := w.comm.AllGather(ps[l.unit.lo:l.unit.hi], intersectCounts(l.unit, l.t.shards)); err != nil {
		return fmt.Errorf("parallel: layer %s: parameter all-gather: %w", l.name, err)
	}
	if l.t.gatherHook != nil {
		l.t.gatherHook()
	}
	return nil
}

// release gives the layer's pages that hold only other ranks' parameters
// back.
func (l *zeroLinear) release() { l.t.release.releaseRange(l.unit) }

// zeroLinearOp is the forward op.
type zeroLinearOp struct {
	nn.OpDefaults
	l    *zeroLinear
	rows int
	y    nn.OutBuf
}

var matrixType = nn.MatrixType()

func (op *zeroLinearOp) Arity() int    { return 1 }
func (op *zeroLinearOp) Type() hm.Type { return hm.NewFnType(matrixType, matrixType) }
func (op *zeroLinearOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.rows, op.l.out}, nil
}
func (op *zeroLinearOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "parallel.zeroLinear(%s, rows=%d)", op.l.name, op.rows)
}
func (op *zeroLinearOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *zeroLinearOp) String() string {
	return fmt.Sprintf("parallel.zeroLinear(%s, %d→%d)", op.l.name, op.l.in, op.l.out)
}

// Do gathers the weights, computes y = x·W + b and releases them.
func (op *zeroLinearOp) Do(in ...G.Value) (G.Value, error) {
	l := op.l
	x, err := values("zeroLinear", "x", in, 1, 0, op.rows*l.in)
	if err != nil {
		return nil, err
	}
	if err := l.gather(); err != nil {
		return nil, err
	}
	defer l.release()
	ps := l.t.model.Trainable().Data
	var b []float32
	if l.bias.len() > 0 {
		b = ps[l.bias.lo:l.bias.hi]
	}
	y := op.y.Get(op.rows, l.out)
	if err := nn.LinearForward(y.Float32s(), x, ps[l.weight.lo:l.weight.hi], b, op.rows, l.in, l.out); err != nil {
		return nil, fmt.Errorf("parallel: layer %s: %w", l.name, err)
	}
	return y, nil
}

func (op *zeroLinearOp) DiffWRT(n int) []bool { return []bool{true} }

// SymDiff builds the backward op: dx from x and dy.
func (op *zeroLinearOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, fmt.Errorf("parallel: layer %s: %d inputs to differentiate", op.l.name, len(inputs))
	}
	dx, err := G.ApplyOp(&zeroLinearGradOp{fwd: op}, inputs[0], grad)
	if err != nil {
		return nil, fmt.Errorf("parallel: layer %s: %w", op.l.name, err)
	}
	return G.Nodes{dx}, nil
}

// zeroLinearGradOp is the backward op of a zeroLinearOp: inputs x and dy,
// output dx; dW and db go straight into the replica's gradient buffer.
type zeroLinearGradOp struct {
	nn.OpDefaults
	fwd *zeroLinearOp
	dx  nn.OutBuf
}

func (op *zeroLinearGradOp) Arity() int { return 2 }
func (op *zeroLinearGradOp) Type() hm.Type {
	return hm.NewFnType(matrixType, matrixType, matrixType)
}
func (op *zeroLinearGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.fwd.rows, op.fwd.l.in}, nil
}
func (op *zeroLinearGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "parallel.zeroLinearGrad(%s, rows=%d)", op.fwd.l.name, op.fwd.rows)
}
func (op *zeroLinearGradOp) Hashcode() uint32 { return nn.OpHash(op) }
func (op *zeroLinearGradOp) String() string {
	return fmt.Sprintf("parallel.zeroLinearGrad(%s)", op.fwd.l.name)
}

// Do gathers the weights, computes dx = dy·Wᵀ, adds the weighted dW and db
// into the gradient buffer and releases the weights.
func (op *zeroLinearGradOp) Do(in ...G.Value) (G.Value, error) {
	l, rows := op.fwd.l, op.fwd.rows
	x, err := values("zeroLinearGrad", "x", in, 2, 0, rows*l.in)
	if err != nil {
		return nil, err
	}
	dy, err := values("zeroLinearGrad", "dy", in, 2, 1, rows*l.out)
	if err != nil {
		return nil, err
	}
	if err := l.gather(); err != nil {
		return nil, err
	}
	defer l.release()
	t := l.t
	ps := t.model.Trainable().Data
	dx := op.dx.Get(rows, l.in)
	clear(dx.Float32s())
	// dW and db in a scratch mapping given back after the layer, then
	// weighted into the gradient buffer like the graph's gradients.
	t.scratch.acquire()
	defer t.scratch.release()
	dw := t.scratch.data[:l.weight.len()]
	clear(dw)
	var db []float32
	if l.bias.len() > 0 {
		db = t.scratch.data[l.weight.len() : l.weight.len()+l.bias.len()]
		clear(db)
	}
	if err := nn.LinearBackward(dx.Float32s(), dw, db, dy, x, ps[l.weight.lo:l.weight.hi], rows, l.in, l.out, false); err != nil {
		return nil, fmt.Errorf("parallel: layer %s: %w", l.name, err)
	}
	grad, weight := t.workers[0].replica.Grad, t.gradWeight
	kernels.Axpy(weight, dw, grad[l.weight.lo:l.weight.hi])
	if db != nil {
		kernels.Axpy(weight, db, grad[l.bias.lo:l.bias.hi])
	}
	return dx, nil
}

// values returns input i of in, a dense float32 value of n elements, or an
// error naming op fn and the input (see nn.Float32s).
func values(fn, what string, in []G.Value, arity, i, n int) ([]float32, error) {
	if len(in) != arity {
		return nil, fmt.Errorf("parallel: %s: %d inputs, want %d: %w", fn, len(in), arity, nn.ErrShape)
	}
	return nn.Float32s("parallel", fn, what, in[i], n, nn.ErrShape)
}

// shardLayers replaces, at stage 3, every dense linear layer of m whose
// weight and bias are trained (adjacent in the flat vector) by a zeroLinear,
// and returns the replaced layers by name so that Close can put them back.
func (t *Trainer) shardLayers() (map[string]model.Linear, error) {
	m := t.model
	ps := m.Trainable()
	orig := map[string]model.Linear{}
	for _, name := range m.LinearNames() {
		l, err := m.Linear(name)
		if err != nil {
			return orig, err
		}
		d, ok := l.(*model.DenseLinear)
		if !ok || d.Weight == nil || ps.Get(d.Weight.Name) != d.Weight || len(d.Weight.Shape) != 2 {
			continue
		}
		in, out := d.Dims()
		z := &zeroLinear{t: t, inner: d, name: name, in: in, out: out,
			weight: span{d.Weight.Offset, d.Weight.Offset + d.Weight.Size()}}
		z.unit = z.weight
		if d.Bias != nil {
			if ps.Get(d.Bias.Name) != d.Bias || d.Bias.Size() != out {
				continue
			}
			z.bias = span{d.Bias.Offset, d.Bias.Offset + d.Bias.Size()}
			switch {
			case z.bias.lo == z.weight.hi:
				z.unit.hi = z.bias.hi
			case z.bias.hi == z.weight.lo:
				z.unit.lo = z.bias.lo
			default:
				continue // not one range: gathered with the rest
			}
		}
		if err := m.SetLinear(name, z); err != nil {
			return orig, fmt.Errorf("parallel: %w", err)
		}
		orig[name] = l
		t.layers = append(t.layers, z)
	}
	return orig, nil
}

// restoreLayers puts back the layers shardLayers replaced.
func (t *Trainer) restoreLayers() {
	for name, l := range t.origLayers {
		_ = t.model.SetLinear(name, l)
	}
	t.origLayers, t.layers = nil, nil
}

// restSpans returns the parts of [0, psi) outside every layer's unit, in
// order, cut at bucket boundaries.
func (t *Trainer) restSpans() []span {
	psi := t.model.Trainable().Len()
	covered := make([]span, 0, len(t.layers))
	for _, l := range t.layers {
		covered = append(covered, l.unit)
	}
	// Units are disjoint; sort them by start.
	for i := 1; i < len(covered); i++ {
		for j := i; j > 0 && covered[j].lo < covered[j-1].lo; j-- {
			covered[j], covered[j-1] = covered[j-1], covered[j]
		}
	}
	var gaps []span
	at := 0
	for _, c := range covered {
		if c.lo > at {
			gaps = append(gaps, span{at, c.lo})
		}
		at = max(at, c.hi)
	}
	if at < psi {
		gaps = append(gaps, span{at, psi})
	}
	var out []span
	for _, g := range gaps {
		for _, b := range t.buckets {
			lo, hi := max(g.lo, b.lo), min(g.hi, b.hi)
			if lo < hi {
				out = append(out, span{lo, hi})
			}
		}
	}
	return out
}
