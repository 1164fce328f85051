package kernels

// SwiGLUForward computes the Llama family's gated activation
// y[i] = silu(gate[i])·up[i] = gate[i]·s[i]·up[i] and saves the sigmoid
// s[i] = σ(gate[i]) = 1/(1 + exp(−gate[i])) that SwiGLUGrad takes, in one
// pass. y, s and up must have the length of gate; y may alias gate or up, s
// may alias nothing. exp(−g) = +Inf gives s = 0 and y = ±0·up, so the result
// stays finite for finite inputs. An element's result depends only on that
// element's inputs, never on where the slice is cut.
func SwiGLUForward(y, s, gate, up []float32) {
	checkSameLen("SwiGLUForward", len(y), len(gate))
	checkSameLen("SwiGLUForward", len(s), len(gate))
	checkSameLen("SwiGLUForward", len(up), len(gate))
	swigluFwd(y, s, gate, up)
}

// SwiGLUGrad sets (acc false) or adds to (acc true) the gradients of
// SwiGLUForward given dy and the saved sigmoid s: dgate[i] gets
// dy[i]·up[i]·s[i]·(1 + gate[i]·(1 − s[i])) and dup[i] gets
// dy[i]·gate[i]·s[i]. Either of dgate and dup may be nil to skip it (up is
// read only for dgate); every other slice has the length of gate. As with
// SwiGLUForward, no element depends on where the slice is cut.
func SwiGLUGrad(dgate, dup, dy, gate, up, s []float32, acc bool) {
	checkSameLen("SwiGLUGrad", len(dy), len(gate))
	checkSameLen("SwiGLUGrad", len(s), len(gate))
	if dgate != nil {
		checkSameLen("SwiGLUGrad", len(dgate), len(gate))
		checkSameLen("SwiGLUGrad", len(up), len(gate))
		swigluGateGrad(dgate, dy, gate, up, s, acc)
	}
	if dup != nil {
		checkSameLen("SwiGLUGrad", len(dup), len(gate))
		swigluUpGrad(dup, dy, gate, s, acc)
	}
}

func swigluFwdGeneric(y, s, gate, up []float32) {
	s, y, up = s[:len(gate)], y[:len(gate)], up[:len(gate)]
	for i, g := range gate {
		s[i] = -g
	}
	expGeneric(s, s)
	for i, e := range s {
		sg := 1 / (1 + e)
		s[i] = sg
		y[i] = gate[i] * sg * up[i]
	}
}

func swigluGateGradGeneric(dg, dy, gate, up, s []float32, acc bool) {
	dy, up, s = dy[:len(dg)], up[:len(dg)], s[:len(dg)]
	gate = gate[:len(dg)]
	if acc {
		for i, g := range gate {
			dg[i] += dy[i] * up[i] * s[i] * (1 + g*(1-s[i]))
		}
		return
	}
	for i, g := range gate {
		dg[i] = dy[i] * up[i] * s[i] * (1 + g*(1-s[i]))
	}
}

func swigluUpGradGeneric(du, dy, gate, s []float32, acc bool) {
	dy, gate, s = dy[:len(du)], gate[:len(du)], s[:len(du)]
	if acc {
		for i, g := range gate {
			du[i] += dy[i] * g * s[i]
		}
		return
	}
	for i, g := range gate {
		du[i] = dy[i] * g * s[i]
	}
}
