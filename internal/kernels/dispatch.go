package kernels

// useAVX2 selects the AVX2+FMA assembly kernels. It is set once at start-up
// from the CPU's features (dispatch_amd64.go) and is the only mutable state of
// the package; tests flip it to run every implementation the CPU supports.
var useAVX2 = hasAVX2FMA

// Implementation names the kernel set in use: "avx2+fma" or "generic".
func Implementation() string {
	if useAVX2 {
		return "avx2+fma"
	}
	return "generic"
}
