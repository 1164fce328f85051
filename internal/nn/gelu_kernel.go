package nn

import "github.com/galleon-ml/galleon/internal/kernels"

// GELU in its tanh form, 0.5·x·(1 + tanh(u)) with u = √(2/π)·(x + 0.044715·x³),
// is evaluated as x·σ(2u) = x / (1 + exp(−2u)): the same function with one
// exponential and no tanh (kernels.GELUForward and kernels.GELUGrad, which
// are vectorized). The form stays finite at both ends: exp(−2u) = +Inf
// gives σ = 0, and 0 gives σ = 1.
const (
	geluC = 0.7978845608028654 // √(2/π), for the graph-built reference in the benchmarks
	geluK = 0.044715
	// geluChunk bounds the stack scratch so the kernels never allocate.
	geluChunk = 256
)

// GELUForward computes y = GELU(x) element-wise (tanh approximation, as GPT-2
// and PyTorch's approximate='tanh'). y may alias x.
func GELUForward(y, x []float32) error {
	if err := checkLen("GELUForward", "y", len(y), len(x)); err != nil {
		return err
	}
	geluForward(y, nil, x)
	return nil
}

// geluForward writes y = x·s and, when s is non-nil, the sigmoid s = σ(2u)
// that the backward pass needs, so backward repeats no exponential.
func geluForward(y, s, x []float32) {
	geluForwardLoops.Run(0, geluForwardBody{y, s, x}, len(x), parGrain)
}

// geluForwardBody is the loop body of geluForward.
type geluForwardBody struct{ y, s, x []float32 }

var geluForwardLoops kernels.Chunks[geluForwardBody, *geluForwardBody]

func (b *geluForwardBody) Chunk(lo, hi int) {
	y, x := b.y[lo:hi], b.x[lo:hi]
	if s := b.s; s != nil {
		kernels.GELUForward(y, s[lo:hi], x)
		return
	}
	var buf [geluChunk]float32
	for lo := 0; lo < len(x); lo += geluChunk {
		hi := min(lo+geluChunk, len(x))
		kernels.GELUForward(y[lo:hi], buf[:hi-lo], x[lo:hi])
	}
}

// GELUBackward accumulates dx += dy·GELU'(x), with
// GELU'(x) = σ + x·σ·(1 − σ)·2√(2/π)·(1 + 3·0.044715·x²), σ = σ(2u).
func GELUBackward(dx, dy, x []float32) error {
	const fn = "GELUBackward"
	if err := checkLen(fn, "dy", len(dy), len(x)); err != nil {
		return err
	}
	if err := checkLen(fn, "dx", len(dx), len(x)); err != nil {
		return err
	}
	geluBackward(dx, dy, x, nil, true)
	return nil
}

// geluBackward writes (acc false) or adds (acc true) dx = dy·GELU'(x) from
// the sigmoid s saved by geluForward; with s nil it recomputes it.
func geluBackward(dx, dy, x, s []float32, acc bool) {
	geluBackwardLoops.Run(0, geluBackwardBody{dx, dy, x, s, acc}, len(x), parGrain)
}

// geluBackwardBody is the loop body of geluBackward.
type geluBackwardBody struct {
	dx, dy, x, s []float32
	acc          bool
}

var geluBackwardLoops kernels.Chunks[geluBackwardBody, *geluBackwardBody]

func (b *geluBackwardBody) Chunk(lo, hi int) {
	dx, dy, x, acc := b.dx[lo:hi], b.dy[lo:hi], b.x[lo:hi], b.acc
	if s := b.s; s != nil {
		geluGrad(dx, dy, x, s[lo:hi], acc)
		return
	}
	var buf, ybuf [geluChunk]float32
	for lo := 0; lo < len(x); lo += geluChunk {
		hi := min(lo+geluChunk, len(x))
		s := buf[:hi-lo]
		kernels.GELUForward(ybuf[:hi-lo], s, x[lo:hi])
		geluGrad(dx[lo:hi], dy[lo:hi], x[lo:hi], s, acc)
	}
}

func geluGrad(dx, dy, x, s []float32, acc bool) {
	kernels.GELUGrad(dx, dy, x, s[:len(x)], acc)
}
