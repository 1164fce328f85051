package nn

import "github.com/galleon-ml/galleon/internal/kernels"

// SwiGLUForward computes y = silu(gate)·up element-wise, with
// silu(g) = g·σ(g): the gated MLP activation of the Llama family (down_proj
// of silu(gate_proj(x))·up_proj(x)). gate, up and y have the same length; y
// may alias gate or up.
func SwiGLUForward(y, gate, up []float32) error {
	const fn = "SwiGLUForward"
	if err := checkLen(fn, "up", len(up), len(gate)); err != nil {
		return err
	}
	if err := checkLen(fn, "y", len(y), len(gate)); err != nil {
		return err
	}
	swigluForward(y, nil, gate, up)
	return nil
}

// swigluForward writes y and, when s is non-nil, the sigmoid σ(gate) that
// the backward pass needs, so backward repeats no exponential.
func swigluForward(y, s, gate, up []float32) {
	swigluForwardLoops.Run(0, swigluForwardBody{y, s, gate, up}, len(gate), parGrain)
}

// swigluForwardBody is the loop body of swigluForward.
type swigluForwardBody struct{ y, s, gate, up []float32 }

var swigluForwardLoops kernels.Chunks[swigluForwardBody, *swigluForwardBody]

func (b *swigluForwardBody) Chunk(lo, hi int) {
	y, gate, up := b.y[lo:hi], b.gate[lo:hi], b.up[lo:hi]
	if s := b.s; s != nil {
		kernels.SwiGLUForward(y, s[lo:hi], gate, up)
		return
	}
	var buf [geluChunk]float32
	for lo := 0; lo < len(gate); lo += geluChunk {
		hi := min(lo+geluChunk, len(gate))
		kernels.SwiGLUForward(y[lo:hi], buf[:hi-lo], gate[lo:hi], up[lo:hi])
	}
}

// SwiGLUBackward accumulates the gradients of SwiGLUForward given dy:
// dgate += dy·up·σ(g)·(1 + g·(1 − σ(g))) and dup += dy·silu(g). Either of
// dgate and dup may be nil to skip it.
func SwiGLUBackward(dgate, dup, dy, gate, up []float32) error {
	const fn = "SwiGLUBackward"
	n := len(gate)
	if err := checkLen(fn, "up", len(up), n); err != nil {
		return err
	}
	if err := checkLen(fn, "dy", len(dy), n); err != nil {
		return err
	}
	if dgate != nil {
		if err := checkLen(fn, "dgate", len(dgate), n); err != nil {
			return err
		}
	}
	if dup != nil {
		if err := checkLen(fn, "dup", len(dup), n); err != nil {
			return err
		}
	}
	swigluBackward(dgate, dup, dy, gate, up, nil, true)
	return nil
}

// swigluBackward writes (acc false) or adds (acc true) the gradients that
// are not nil, from the sigmoid s saved by swigluForward; with s nil it
// recomputes it.
func swigluBackward(dgate, dup, dy, gate, up, s []float32, acc bool) {
	swigluBackwardLoops.Run(0, swigluBackwardBody{dgate, dup, dy, gate, up, s, acc}, len(gate), parGrain)
}

// swigluBackwardBody is the loop body of swigluBackward.
type swigluBackwardBody struct {
	dgate, dup, dy, gate, up, s []float32
	acc                         bool
}

var swigluBackwardLoops kernels.Chunks[swigluBackwardBody, *swigluBackwardBody]

func (b *swigluBackwardBody) Chunk(lo, hi int) {
	dgate, dup, dy, gate, up, s := b.dgate, b.dup, b.dy[lo:hi], b.gate[lo:hi], b.up, b.s
	acc := b.acc
	if dgate != nil {
		dgate = dgate[lo:hi]
	}
	if dup != nil {
		dup = dup[lo:hi]
	}
	if up != nil {
		up = up[lo:hi]
	}
	if s != nil {
		kernels.SwiGLUGrad(dgate, dup, dy, gate, up, s[lo:hi], acc)
		return
	}
	// No saved sigmoid: recompute it block by block (the forward's y goes
	// to a scratch block of its own).
	var sb, yb [geluChunk]float32
	for c := 0; c < len(gate); c += geluChunk {
		e := min(c+geluChunk, len(gate))
		sc := sb[:e-c]
		u := up
		if u == nil { // dup only: σ needs no up, any values do
			u = gate
		}
		kernels.SwiGLUForward(yb[:e-c], sc, gate[c:e], u[c:e])
		var dg, du, uc []float32
		if dgate != nil {
			dg, uc = dgate[c:e], up[c:e]
		}
		if dup != nil {
			du = dup[c:e]
		}
		kernels.SwiGLUGrad(dg, du, dy[c:e], gate[c:e], uc, sc, acc)
	}
}

// swigluPacked runs SwiGLU over rows of packed [gate | up] halves: gu is
// [n, 2F], y and s [n, F]. Forward (dgu nil) writes y and the sigmoid s;
// backward writes both halves of dgu from dy [n, F] and the saved s.
func swigluPacked(y, s, gu, dgu, dy []float32, F int) {
	swigluPackedLoops.Run(0, swigluPackedBody{y, s, gu, dgu, dy, F}, len(s)/max(F, 1), rowGrain(2*F))
}

// swigluPackedBody is the loop body of swigluPacked, over rows.
type swigluPackedBody struct {
	y, s, gu, dgu, dy []float32
	F                 int
}

var swigluPackedLoops kernels.Chunks[swigluPackedBody, *swigluPackedBody]

func (b *swigluPackedBody) Chunk(lo, hi int) {
	F := b.F
	for r := lo; r < hi; r++ {
		gate, up, s := b.gu[2*r*F:2*r*F+F], b.gu[2*r*F+F:2*r*F+2*F], b.s[r*F:r*F+F]
		if b.dgu == nil {
			kernels.SwiGLUForward(b.y[r*F:r*F+F], s, gate, up)
			continue
		}
		kernels.SwiGLUGrad(b.dgu[2*r*F:2*r*F+F], b.dgu[2*r*F+F:2*r*F+2*F], b.dy[r*F:r*F+F], gate, up, s, false)
	}
}
