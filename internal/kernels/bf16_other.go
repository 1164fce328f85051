//go:build !amd64 || purego

package kernels

// Without assembly the bf16 conversions run in Go and the paired GEMM
// kernel runs its portable form; the GEMM itself takes the float32 path.

const gemmBF16Asm = false

func toBF16Asm(dst []uint16, src []float32) int   { return 0 }
func fromBF16Asm(dst []float32, src []uint16) int { return 0 }

func dotBF16Asm(a, b []uint16) (float32, int) { return 0, 0 }

func interleaveAsm(dst []uint32, stride int, s0, s1 []uint16) int { return 0 }

func cvtPairsAsm(dst []uint32, stride int, s0, s1 []float32) int { return 0 }

func cvtA6Asm(dst []uint32, src []float32, ld, kp int) bool { return false }

func cvtPairBlockAsm(group int, dst []uint32, stride int, src []float32, ld, n, kp int) bool {
	return false
}

func bf16Kernel(aPanels, bPanels, kp int, a []uint32, aStride int, b []uint32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	bf16KernelGo(aPanels, bPanels, kp, a, aStride, b, bStride, c, ldc, alpha, beta, bias)
}
