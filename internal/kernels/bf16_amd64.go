//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// The bf16 kernels are generated with avo: their declarations are in
// bf16_amd64_stubs.go and their code in bf16_amd64.s. To change them, edit
// _asm/bf16/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./bf16 -out ../bf16_amd64.s -stubs ../bf16_amd64_stubs.go -pkg kernels"

var (
	// bf16CvtAVX512 enables the AVX-512 float32↔bfloat16 conversions
	// ("bf16cvt/avx512").
	bf16CvtAVX512 bool
	// gemmBF16Asm enables the VDPBF16PS GEMM ("gemmbf16/avx512bf16"),
	// which needs AVX512_BF16 on top of the AVX-512 level.
	gemmBF16Asm bool
)

func init() {
	Register("bf16cvt", "avx512", LevelAVX512, true, &bf16CvtAVX512)
	Register("gemmbf16", "avx512bf16", LevelAVX512, cpu.X86.HasAVX512BF16, &gemmBF16Asm)
}

// toBF16Asm converts the longest prefix of src the vector routine handles
// (a multiple of 16 elements) into dst, and returns its length. len(dst) ≥
// len(src).
func toBF16Asm(dst []uint16, src []float32) int {
	n := len(src) &^ 15
	if !bf16CvtAVX512 || n == 0 {
		return 0
	}
	_ = dst[n-1]
	f32ToBF16AVX512(&dst[0], &src[0], n)
	return n
}

// fromBF16Asm is toBF16Asm for widening.
func fromBF16Asm(dst []float32, src []uint16) int {
	n := len(src) &^ 15
	if !bf16CvtAVX512 || n == 0 {
		return 0
	}
	_ = dst[n-1]
	bf16ToF32AVX512(&dst[0], &src[0], n)
	return n
}

// interleaveAsm sets dst[g·stride+i] = pair(s0[16g+i], s1[16g+i]) for the
// longest prefix of s0 (whole groups of 16) the vector routine handles, and
// returns its length. len(s1) ≥ len(s0).
func interleaveAsm(dst []uint32, stride int, s0, s1 []uint16) int {
	n := len(s0) &^ 15
	if !bf16CvtAVX512 || n == 0 {
		return 0
	}
	_, _ = s1[n-1], dst[(n/16-1)*stride+15]
	interleaveBF16AVX512(&dst[0], stride, &s0[0], &s1[0], n)
	return n
}

// cvtPairsAsm is interleaveAsm for float32 rows, rounded to bfloat16 as
// ToBF16 rounds them: dst[g·stride+i] = pair(Float32ToBF16(s0[16g+i]),
// Float32ToBF16(s1[16g+i])).
func cvtPairsAsm(dst []uint32, stride int, s0, s1 []float32) int {
	n := len(s0) &^ 15
	if !bf16CvtAVX512 || n == 0 {
		return 0
	}
	_, _ = s1[n-1], dst[(n/16-1)*stride+15]
	cvtPairsAVX512(&dst[0], stride, &s0[0], &s1[0], n)
	return n
}

// cvtPairBlockAsm rounds kp k pairs of a float32 matrix stored with row
// stride ld, pair pp joining stored rows 2pp and 2pp+1 of src, columns
// c < n, into the micro-panels of group (6 for a transposed A, 16 for B)
// columns: word (pp, c) to dst[pp·group + (c/group)·stride + c%group],
// rounded as Float32ToBF16 and paired as pair; the words of a last group
// past n are zero (the panel's columns past the edge). It reports false,
// doing nothing, without the vector routine.
func cvtPairBlockAsm(group int, dst []uint32, stride int, src []float32, ld, n, kp int) bool {
	if !bf16CvtAVX512 || n == 0 || kp == 0 {
		return false
	}
	_ = src[(2*kp-1)*ld+n-1]
	_ = dst[(kp-1)*group+(ceilDiv(n, group)-1)*stride+group-1]
	if group == sgemmMR {
		cvtPairs6AVX512(&dst[0], stride, &src[0], ld, n, kp)
	} else {
		cvtPairs16AVX512(&dst[0], stride, &src[0], ld, n, kp)
	}
	return true
}

// cvtA6Asm packs six float32 rows of a plain A, row stride ld, into one
// 6-row micro-panel of kp k pairs: dst[6pp+r] = pair(Float32ToBF16(src[r·ld
// + 2pp]), Float32ToBF16(src[r·ld + 2pp + 1])). It reports false, doing
// nothing, without the vector routine.
func cvtA6Asm(dst []uint32, src []float32, ld, kp int) bool {
	if !bf16CvtAVX512 || kp == 0 {
		return false
	}
	_, _ = src[(sgemmMR-1)*ld+2*kp-1], dst[sgemmMR*kp-1]
	cvtA6AVX512(&dst[0], &src[0], ld, kp)
	return true
}

// dotBF16Asm returns the sum of a[i]·b[i] over the longest prefix the
// VDPBF16PS routine handles, and that prefix's length.
func dotBF16Asm(a, b []uint16) (float32, int) {
	n := len(a) &^ 31
	if !gemmBF16Asm || n == 0 {
		return 0, 0
	}
	_ = b[n-1]
	return dotBF16AVX512(&a[0], &b[0], n), n
}

// bf16Kernel computes the (aPanels·6)×(bPanels·16) tile C = alpha·A·B +
// beta·C over kp k pairs of packed bf16 operands (see bf16gemm.go) with the
// VDPBF16PS kernel of that size, or with the portable form when it is not
// enabled. A non-nil bias (at least bPanels·16 floats) seeds the sums:
// C = alpha·(A·B + bias) + beta·C. The slice expressions are the bounds
// checks that keep the assembly in bounds.
func bf16Kernel(aPanels, bPanels, kp int, a []uint32, aStride int, b []uint32, bStride int, c []float32, ldc int, alpha, beta float32, bias []float32) {
	if !gemmBF16Asm {
		bf16KernelGo(aPanels, bPanels, kp, a, aStride, b, bStride, c, ldc, alpha, beta, bias)
		return
	}
	_ = a[(aPanels-1)*aStride+kp*sgemmMR-1]
	_ = b[(bPanels-1)*bStride+kp*sgemmNR-1]
	_ = c[(aPanels*sgemmMR-1)*ldc+bPanels*sgemmNR-1]
	if bias != nil {
		_ = bias[bPanels*sgemmNR-1]
		switch {
		case aPanels == 2 && bPanels == 2:
			bf16Kernel12x32BiasAVX512(kp, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
		case aPanels == 2:
			bf16Kernel12x16BiasAVX512(kp, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
		case bPanels == 2:
			bf16Kernel6x32BiasAVX512(kp, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
		default:
			bf16Kernel6x16BiasAVX512(kp, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta, &bias[0])
		}
		return
	}
	switch {
	case aPanels == 2 && bPanels == 2:
		bf16Kernel12x32AVX512(kp, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta)
	case aPanels == 2:
		bf16Kernel12x16AVX512(kp, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta)
	case bPanels == 2:
		bf16Kernel6x32AVX512(kp, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta)
	default:
		bf16Kernel6x16AVX512(kp, &a[0], aStride, &b[0], bStride, &c[0], ldc, alpha, beta)
	}
}
