package model

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	"github.com/galleon-ml/galleon/internal/nn"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The Llama family's fused pieces: RMSNorm, SwiGLU and rotary positions,
// each a float32 kernel (used by the inference path) and a gorgonia op
// (used by the training graph) whose backward is one fused op. The
// gradient node of the first input computes every input's gradient and
// keeps the others, which their own nodes return (they take it as an
// input, so gorgonia runs them after it).

var vectorType = G.TensorType{Dims: 1, Of: tensor.Float32}

// rmsNormRows computes y = x·rsqrt(mean(x²)+eps)·w over rows of width C
// and stores each row's rsqrt in rstd (when not nil).
func rmsNormRows(y, rstd, x, w []float32, C int, eps float32) {
	rows := len(x) / C
	for r := 0; r < rows; r++ {
		xr, yr := x[r*C:(r+1)*C], y[r*C:(r+1)*C]
		var ss float64
		for _, v := range xr {
			ss += float64(v) * float64(v)
		}
		s := float32(1 / math.Sqrt(ss/float64(C)+float64(eps)))
		if rstd != nil {
			rstd[r] = s
		}
		for i, v := range xr {
			yr[i] = v * s * w[i]
		}
	}
}

// rmsNormBackward computes dx and adds dw for y = rmsnorm(x)·w from dy,
// given each row's rstd.
func rmsNormBackward(dx, dw, dy, x, w, rstd []float32, C int) {
	rows := len(x) / C
	for r := 0; r < rows; r++ {
		xr, dyr, dxr := x[r*C:(r+1)*C], dy[r*C:(r+1)*C], dx[r*C:(r+1)*C]
		s := rstd[r]
		var dot float64 // Σ dy·w·x
		for i, v := range xr {
			dot += float64(dyr[i]) * float64(w[i]) * float64(v)
			dw[i] += dyr[i] * v * s
		}
		k := float32(dot/float64(C)) * s * s
		for i, v := range xr {
			dxr[i] = s * (dyr[i]*w[i] - v*k)
		}
	}
}

// swigluRows computes y = silu(g)·u.
func swigluRows(y, g, u []float32) {
	for i, gi := range g[:len(y)] {
		y[i] = gi / (1 + float32(math.Exp(float64(-gi)))) * u[i]
	}
}

// swigluBackward computes dg and du of y = silu(g)·u from dy.
func swigluBackward(dg, du, dy, g, u []float32) {
	for i, gi := range g[:len(dy)] {
		sg := 1 / (1 + float32(math.Exp(float64(-gi))))
		du[i] = dy[i] * gi * sg
		dg[i] = dy[i] * u[i] * sg * (1 + gi*(1-sg))
	}
}

// llamaOp is the common part of the ops below.
type llamaOp struct {
	nn.OpDefaults
	name  string // for errors, hashes and String
	arity int
	shape tensor.Shape
	types []hm.Type // inputs then output
	hash  string    // everything the op computes with, for WriteHash
	// compute fills dst from the inputs.
	compute func(dst []float32, in []G.Value) error
	// diff builds the gradient nodes (nil: not differentiable).
	diff func(inputs G.Nodes, grad *G.Node) (G.Nodes, error)
	out  nn.OutBuf
}

func (op *llamaOp) Arity() int                                     { return op.arity }
func (op *llamaOp) Type() hm.Type                                  { return hm.NewFnType(op.types...) }
func (op *llamaOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape.Clone(), nil }
func (op *llamaOp) size() int                                      { return op.shape.TotalSize() }

func (op *llamaOp) Do(in ...G.Value) (G.Value, error) {
	if len(op.shape) == 1 {
		return op.out.Do(op.shape[0], -1, func(dst []float32) error { return op.run(dst, in) })
	}
	return op.out.Do(op.shape[0], op.shape[1], func(dst []float32) error { return op.run(dst, in) })
}

func (op *llamaOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	return nn.PreallocDo("model", op.name, prealloc, op.size(), nil, func(dst []float32) error { return op.run(dst, in) })
}

func (op *llamaOp) run(dst []float32, in []G.Value) error {
	if len(in) != op.arity {
		return fmt.Errorf("model: %s: %d inputs, want %d", op.name, len(in), op.arity)
	}
	return op.compute(dst, in)
}

func (op *llamaOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "model.%s(%s)", op.name, op.hash) }
func (op *llamaOp) Hashcode() uint32      { return nn.OpHash(op) }
func (op *llamaOp) String() string        { return op.name }

func (op *llamaOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = op.diff != nil
	}
	return d
}

func (op *llamaOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if op.diff == nil {
		return nil, fmt.Errorf("model: %s is not differentiable", op.name)
	}
	return op.diff(inputs, grad)
}

// floats reads input i of n elements.
func floats(op string, in []G.Value, i, n int) ([]float32, error) {
	return nn.Float32s("model", op, fmt.Sprintf("input %d", i), in[i], n, nil)
}

// rmsNormGraph adds y = x·rsqrt(mean(x²)+eps)·w to x's graph: x [rows, C],
// w [C].
func rmsNormGraph(x, w *G.Node, eps float32) (*G.Node, error) {
	xs := x.Shape()
	if len(xs) != 2 || !w.Shape().Eq(tensor.Shape{xs[1]}) {
		return nil, fmt.Errorf("model: RMSNorm: x %v, w %v", xs, w.Shape())
	}
	rows, C := xs[0], xs[1]
	rstd := make([]float32, rows)
	dw := make([]float32, C)        // the weight's gradient, kept by the dx op
	serial := fmt.Sprintf("%p", dw) // the state the backward shares: never merge two of these ops
	fwd := &llamaOp{name: "RMSNorm", arity: 2, shape: tensor.Shape{rows, C}, types: []hm.Type{matrixType, vectorType, matrixType},
		hash: fmt.Sprintf("#%s rows=%d C=%d eps=%#x", serial, rows, C, math.Float32bits(eps))}
	fwd.compute = func(dst []float32, in []G.Value) error {
		xv, err := floats("RMSNorm", in, 0, rows*C)
		if err != nil {
			return err
		}
		wv, err := floats("RMSNorm", in, 1, C)
		if err != nil {
			return err
		}
		rmsNormRows(dst, rstd, xv, wv, C, eps)
		return nil
	}
	fwd.diff = func(inputs G.Nodes, grad *G.Node) (G.Nodes, error) {
		dxOp := &llamaOp{name: "RMSNormGrad", arity: 3, shape: tensor.Shape{rows, C}, types: []hm.Type{matrixType, vectorType, matrixType, matrixType},
			hash: fmt.Sprintf("#%s dx", serial)}
		dxOp.compute = func(dst []float32, in []G.Value) error {
			xv, err := floats("RMSNormGrad", in, 0, rows*C)
			if err != nil {
				return err
			}
			wv, err := floats("RMSNormGrad", in, 1, C)
			if err != nil {
				return err
			}
			dy, err := floats("RMSNormGrad", in, 2, rows*C)
			if err != nil {
				return err
			}
			clear(dw)
			rmsNormBackward(dst, dw, dy, xv, wv, rstd, C)
			return nil
		}
		dx, err := G.ApplyOp(dxOp, inputs[0], inputs[1], grad)
		if err != nil {
			return nil, err
		}
		dwOp := &llamaOp{name: "RMSNormGradW", arity: 1, shape: tensor.Shape{C}, types: []hm.Type{matrixType, vectorType},
			hash: fmt.Sprintf("#%s dw", serial)}
		dwOp.compute = func(dst []float32, _ []G.Value) error { copy(dst, dw); return nil }
		dwn, err := G.ApplyOp(dwOp, dx)
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, dwn}, nil
	}
	return G.ApplyOp(fwd, x, w)
}

// swigluGraph adds y = silu(gate)·up to the graph: both [rows, I].
func swigluGraph(gate, up *G.Node) (*G.Node, error) {
	s := gate.Shape()
	if len(s) != 2 || !s.Eq(up.Shape()) {
		return nil, fmt.Errorf("model: SwiGLU: gate %v, up %v", s, up.Shape())
	}
	n := s.TotalSize()
	du := make([]float32, n)
	serial := fmt.Sprintf("%p", du) // the state the backward shares: never merge two of these ops
	fwd := &llamaOp{name: "SwiGLU", arity: 2, shape: s.Clone(), types: []hm.Type{matrixType, matrixType, matrixType},
		hash: fmt.Sprintf("#%s %v", serial, s)}
	fwd.compute = func(dst []float32, in []G.Value) error {
		g, err := floats("SwiGLU", in, 0, n)
		if err != nil {
			return err
		}
		u, err := floats("SwiGLU", in, 1, n)
		if err != nil {
			return err
		}
		swigluRows(dst, g, u)
		return nil
	}
	fwd.diff = func(inputs G.Nodes, grad *G.Node) (G.Nodes, error) {
		dgOp := &llamaOp{name: "SwiGLUGrad", arity: 3, shape: s.Clone(), types: []hm.Type{matrixType, matrixType, matrixType, matrixType},
			hash: fmt.Sprintf("#%s dg", serial)}
		dgOp.compute = func(dst []float32, in []G.Value) error {
			g, err := floats("SwiGLUGrad", in, 0, n)
			if err != nil {
				return err
			}
			u, err := floats("SwiGLUGrad", in, 1, n)
			if err != nil {
				return err
			}
			dy, err := floats("SwiGLUGrad", in, 2, n)
			if err != nil {
				return err
			}
			swigluBackward(dst, du, dy, g, u)
			return nil
		}
		dg, err := G.ApplyOp(dgOp, inputs[0], inputs[1], grad)
		if err != nil {
			return nil, err
		}
		duOp := &llamaOp{name: "SwiGLUGradUp", arity: 1, shape: s.Clone(), types: []hm.Type{matrixType, matrixType},
			hash: fmt.Sprintf("#%s du", serial)}
		duOp.compute = func(dst []float32, _ []G.Value) error { copy(dst, du); return nil }
		dun, err := G.ApplyOp(duOp, dg)
		if err != nil {
			return nil, err
		}
		return G.Nodes{dg, dun}, nil
	}
	return G.ApplyOp(fwd, gate, up)
}

// ropeGraph adds the rotary positions of t to the first heads heads of x's
// rows ([B·T, width]; sequences of T rows from position 0). Its gradient is
// the inverse rotation of the incoming gradient.
func ropeGraph(x *G.Node, t *ropeTable, heads, T int, inverse bool) (*G.Node, error) {
	s := x.Shape()
	if len(s) != 2 || s[0]%T != 0 || heads*2*t.half > s[1] || T*t.half > len(t.cos) {
		return nil, fmt.Errorf("model: RoPE: x %v for %d heads of %d, T=%d", s, heads, 2*t.half, T)
	}
	n := s.TotalSize()
	op := &llamaOp{name: "RoPE", arity: 1, shape: s.Clone(), types: []hm.Type{matrixType, matrixType},
		hash: fmt.Sprintf("%v heads=%d half=%d T=%d inverse=%t table=%p", s, heads, t.half, T, inverse, t)}
	op.compute = func(dst []float32, in []G.Value) error {
		xv, err := floats("RoPE", in, 0, n)
		if err != nil {
			return err
		}
		copy(dst, xv)
		t.rotate(dst, s[1], heads, T, 0, inverse)
		return nil
	}
	op.diff = func(_ G.Nodes, grad *G.Node) (G.Nodes, error) {
		g, err := ropeGraph(grad, t, heads, T, !inverse)
		return G.Nodes{g}, err
	}
	return G.ApplyOp(op, x)
}
