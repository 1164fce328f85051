//go:build amd64 && !purego

package kernels

// SwiGLU's kernels are in the vec generator (_asm/vec, vec_amd64.s) beside
// exp, whose code the forward pass shares, and are enabled with the other
// vector routines (the "vec" family of the registry).

func swigluFwd(y, s, gate, up []float32) {
	if vecAVX2 {
		swigluFwdAVX2(y, s, gate, up)
		return
	}
	swigluFwdGeneric(y, s, gate, up)
}

func swigluGateGrad(dg, dy, gate, up, s []float32, acc bool) {
	if vecAVX2 {
		swigluGateGradAVX2(dg, dy, gate, up, s, acc)
		return
	}
	swigluGateGradGeneric(dg, dy, gate, up, s, acc)
}

func swigluUpGrad(du, dy, gate, s []float32, acc bool) {
	if vecAVX2 {
		swigluUpGradAVX2(du, dy, gate, s, acc)
		return
	}
	swigluUpGradGeneric(du, dy, gate, s, acc)
}
