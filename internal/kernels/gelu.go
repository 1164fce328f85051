package kernels

// The derivative of GELU in its tanh form, for the backward pass. With
// u = √(2/π)·(x + 0.044715·x³) and s = σ(2u) saved by the forward pass,
// GELU'(x) = s + x·s·(1 − s)·2√(2/π)·(1 + 3·0.044715·x²).
const (
	geluC2 = 2 * 0.7978845608028654 // 2·√(2/π)
	geluK3 = 3 * 0.044715
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
