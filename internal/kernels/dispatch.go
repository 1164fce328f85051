package kernels

// useAVX2 selects the AVX2+FMA assembly kernels, and useAVX512 (which
// implies useAVX2) the AVX-512 kernels (SGEMM, GELUGrad) on top of them. They are
// set once at start-up from the CPU's features (dispatch_amd64.go) and are
// the only mutable state of the package; tests flip them to run every
// implementation the CPU supports.
var (
	useAVX2   = hasAVX2FMA
	useAVX512 = hasAVX512
)

// Implementation names the kernel set in use: "avx512", "avx2+fma" or
// "generic".
func Implementation() string {
	if useAVX512 {
		return "avx512"
	}
	if useAVX2 {
		return "avx2+fma"
	}
	return "generic"
}
