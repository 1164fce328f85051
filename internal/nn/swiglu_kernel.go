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
		s = s[lo:hi]
		sigmoid(s, gate)
		for i, g := range gate {
			y[i] = g * s[i] * up[i]
		}
		return
	}
	var buf [geluChunk]float32
	for lo := 0; lo < len(gate); lo += geluChunk {
		hi := min(lo+geluChunk, len(gate))
		sc := buf[:hi-lo]
		sigmoid(sc, gate[lo:hi])
		for i, g := range gate[lo:hi] {
			y[lo+i] = g * sc[i] * up[lo+i]
		}
	}
}

// sigmoid writes s = σ(x) = 1/(1 + exp(−x)); s may alias x. exp(−x) = +Inf
// gives 0 and 0 gives 1, so the result stays finite.
func sigmoid(s, x []float32) {
	s = s[:len(x)]
	for i, v := range x {
		s[i] = -v
	}
	kernels.Exp(s, s)
	for i, e := range s {
		s[i] = 1 / (1 + e)
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
		swigluGrad(dgate, dup, dy, gate, up, s[lo:hi], acc)
		return
	}
	var buf [geluChunk]float32
	for c := 0; c < len(gate); c += geluChunk {
		e := min(c+geluChunk, len(gate))
		sc := buf[:e-c]
		sigmoid(sc, gate[c:e])
		var dg, du, u []float32
		if dgate != nil {
			dg, u = dgate[c:e], up[c:e]
		}
		if dup != nil {
			du = dup[c:e]
		}
		swigluGrad(dg, du, dy[c:e], gate[c:e], u, sc, acc)
	}
}

func swigluGrad(dgate, dup, dy, gate, up, s []float32, acc bool) {
	dy, s = dy[:len(gate)], s[:len(gate)]
	if dgate != nil {
		dgate, up = dgate[:len(gate)], up[:len(gate)]
		if acc {
			for i, g := range gate {
				dgate[i] += dy[i] * up[i] * s[i] * (1 + g*(1-s[i]))
			}
		} else {
			for i, g := range gate {
				dgate[i] = dy[i] * up[i] * s[i] * (1 + g*(1-s[i]))
			}
		}
	}
	if dup != nil {
		dup = dup[:len(gate)]
		if acc {
			for i, g := range gate {
				dup[i] += dy[i] * g * s[i]
			}
		} else {
			for i, g := range gate {
				dup[i] = dy[i] * g * s[i]
			}
		}
	}
}
