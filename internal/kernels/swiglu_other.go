//go:build !amd64 || purego

package kernels

func swigluFwd(y, s, gate, up []float32) { swigluFwdGeneric(y, s, gate, up) }

func swigluGateGrad(dg, dy, gate, up, s []float32, acc bool) {
	swigluGateGradGeneric(dg, dy, gate, up, s, acc)
}

func swigluUpGrad(du, dy, gate, s []float32, acc bool) { swigluUpGradGeneric(du, dy, gate, s, acc) }
