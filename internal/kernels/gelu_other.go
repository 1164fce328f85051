//go:build !amd64 || purego

package kernels

// geluGradAsm reports that no assembly is built here: GELUGrad then runs the
// portable loop.
func geluGradAsm(dx, dy, x, s []float32, acc bool) bool { return false }

// geluForwardAsm reports that no assembly is built here.
func geluForwardAsm(y, s, x []float32) bool { return false }
