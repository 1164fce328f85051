package kernels

// The derivative of GELU in its tanh form, for the backward pass. With
// u = √(2/π)·(x + 0.044715·x³) and s = σ(2u) saved by the forward pass,
// GELU'(x) = s + x·s·(1 − s)·2√(2/π)·(1 + 3·0.044715·x²).
const (
	geluK  = 0.044715
	geluC2 = 2 * 0.7978845608028654 // 2·√(2/π)
	geluK3 = 3 * geluK
)

// GELUGrad sets (acc false) or adds to (acc true) dx[i] the value
// dy[i]·GELU'(x[i]), given the sigmoid s[i] = σ(2u(x[i])) the forward pass
// saved. dx, dy and s must have the length of x. Each element's result
// depends only on that element's inputs, never on its position or on the
// slice's length, so callers may split the work anywhere.
func GELUGrad(dx, dy, x, s []float32, acc bool) {
	checkSameLen("GELUGrad", len(dx), len(x))
	checkSameLen("GELUGrad", len(dy), len(x))
	checkSameLen("GELUGrad", len(s), len(x))
	if !geluGradAsm(dx, dy, x, s, acc) {
		geluGradGeneric(dx, dy, x, s, acc)
	}
}

func geluGradGeneric(dx, dy, x, s []float32, acc bool) {
	dx = dx[:len(x)]
	dy = dy[:len(x)]
	s = s[:len(x)]
	if acc {
		for i, v := range x {
			sig := s[i]
			dx[i] += dy[i] * (sig + v*sig*(1-sig)*geluC2*(1+geluK3*v*v))
		}
		return
	}
	for i, v := range x {
		sig := s[i]
		dx[i] = dy[i] * (sig + v*sig*(1-sig)*geluC2*(1+geluK3*v*v))
	}
}

// GELUForward computes GELU in its tanh form as x·σ(2u), u = √(2/π)·(x +
// 0.044715·x³): it sets s[i] = σ(2u(x[i])), which GELUGrad takes, and y[i] =
// x[i]·s[i]. y and s must have the length of x; y may alias x. As with
// GELUGrad, an element's result does not depend on where the slice is cut.
func GELUForward(y, s, x []float32) {
	checkSameLen("GELUForward", len(y), len(x))
	checkSameLen("GELUForward", len(s), len(x))
	if !geluForwardAsm(y, s, x) {
		geluForwardGeneric(y, s, x)
	}
}

func geluForwardGeneric(y, s, x []float32) {
	s = s[:len(x)]
	y = y[:len(x)]
	for i, v := range x {
		s[i] = -geluC2 * (v + geluK*v*v*v)
	}
	Exp(s, s)
	for i, e := range s {
		s[i] = 1 / (1 + e)
		y[i] = x[i] * s[i]
	}
}
