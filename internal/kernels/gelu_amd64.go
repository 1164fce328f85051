//go:build amd64 && !purego

package kernels

// The GELU derivative's kernels are generated with avo; their declarations
// are in gelu_amd64_stubs.go and their code in gelu_amd64.s. To change them,
// edit _asm/gelu/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./gelu -out ../gelu_amd64.s -stubs ../gelu_amd64_stubs.go -pkg kernels"

// geluAVX2 and geluAVX512 enable the YMM and ZMM kernels of GELUGrad (the
// "gelu" family of the registry, impl.go).
var geluAVX2, geluAVX512 bool

func init() {
	Register("gelu", "avx2", LevelAVX2, true, &geluAVX2)
	Register("gelu", "avx512", LevelAVX512, true, &geluAVX512)
}

// geluGradAsm computes GELUGrad with the widest enabled kernel and reports
// whether one was enabled. The elements past the last whole vector go
// through the same kernel from a padded copy, so that every element is
// computed by the same instructions (the FMA rounds differently from the Go
// loop) wherever a caller splits the slice.
func geluGradAsm(dx, dy, x, s []float32, acc bool) bool {
	if !geluAVX2 && !geluAVX512 {
		return false
	}
	const w = 16 // the wider vector, a multiple of the narrower
	n := len(x) &^ (w - 1)
	if n > 0 {
		geluGradVec(n, dx, dy, x, s, acc)
	}
	if r := len(x) - n; r > 0 {
		var tdx, tdy, tx, ts [w]float32
		copy(tdx[:], dx[n:])
		copy(tdy[:], dy[n:])
		copy(tx[:], x[n:])
		copy(ts[:], s[n:])
		geluGradVec(w, tdx[:], tdy[:], tx[:], ts[:], acc)
		copy(dx[n:], tdx[:r])
	}
	return true
}

// geluGradVec runs the AVX-512 or AVX2 kernel on the first n elements, n a
// multiple of 16.
func geluGradVec(n int, dx, dy, x, s []float32, acc bool) {
	_, _, _, _ = dx[n-1], dy[n-1], x[n-1], s[n-1]
	if geluAVX512 {
		geluGradAVX512(n, &dx[0], &dy[0], &x[0], &s[0], geluC2, geluK3, acc)
		return
	}
	geluGradAVX2(n, &dx[0], &dy[0], &x[0], &s[0], geluC2, geluK3, acc)
}

// geluForwardAsm computes GELUForward with the AVX2 kernel (vec_amd64.s)
// when either gelu implementation is enabled, and reports whether it did.
// The 512-bit form would be no faster on the Zen 4 this was written on,
// whose AVX-512 units are 256 bits wide.
func geluForwardAsm(y, s, x []float32) bool {
	if !geluAVX2 && !geluAVX512 {
		return false
	}
	geluFwdAVX2(y, s, x)
	return true
}
