//go:build !amd64 || purego

package kernels

// Without assembly the micro-kernel is the portable one and the packers
// leave every step to the Go loops.

// sgemmAVX2 and sgemmAVX512 are false: there is no assembly to enable.
const sgemmAVX2, sgemmAVX512 = false, false

func sgemmKernel(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	sgemmKernelGo(kc, a, b, c, ldc, alpha, beta)
}

func packA6Asm(d, a []float32, lda, i, p0, kk int) int          { return 0 }
func packATAsm(dst, a []float32, lda, i0, full, p0, kk int) int { return 0 }
func packBT16Asm(d, b []float32, ldb, j, p0, kk int) int        { return 0 }
func packBNAsm(dst, b []float32, ldb, j0, full, p0, kk int) int { return 0 }

// sgemmAsm reports that no assembly is selected: there is none.
func sgemmAsm() bool { return false }
