//go:build !amd64 || purego

package kernels

// The assembly routines exist only in assembly builds; useAVX2 is constant
// false here, so these are never called.

func i8gemmKernel4x16I32AVX2(kg int, a, b *int8, c *int32, ldc int, add bool) {
	panic("unreachable")
}

func i8gemmKernel4x16F32AVX2(kg int, a, b *int8, c *float32, ldc int, rs, cs, bias *float32, add bool) {
	panic("unreachable")
}

func i8gemmKernelW16I32AVX2(kp int, a, b *int16, c *int32, ldc int, add bool) { panic("unreachable") }

func i8gemmKernelW16F32AVX2(kp int, a, b *int16, c *float32, ldc int, rs, cs, bias *float32, add bool) {
	panic("unreachable")
}

func i8AbsMaxBitsAVX2(x []float32) uint32 { panic("unreachable") }

func i8QuantW16AVX2(k8 int, x *float32, ldx int, inv *float32, dst *int16) { panic("unreachable") }

func i8gemmKernelW16F32R1AVX2(kp int, a, b *int16, c *float32, ldc int, rs, cs, bias *float32, add bool) {
	panic("unreachable")
}

func i8gemmKernelW16F32R2AVX2(kp int, a, b *int16, c *float32, ldc int, rs, cs, bias *float32, add bool) {
	panic("unreachable")
}

func i8gemmKernelW16F32R3AVX2(kp int, a, b *int16, c *float32, ldc int, rs, cs, bias *float32, add bool) {
	panic("unreachable")
}

const hasAVX512VNNI = false

func i8gemmKernelVNNII32(kg int, a, b *int8, corr *int32, c *int32, ldc int, add bool) {
	panic("unreachable")
}

func i8gemmKernelVNNIF32(kg int, a, b *int8, corr *int32, c *float32, ldc int, rs, cs, bias *float32, add bool) {
	panic("unreachable")
}

func i8QuantVNNIAVX512(k16 int, x *float32, ldx int, inv *float32, dst *int8) { panic("unreachable") }
