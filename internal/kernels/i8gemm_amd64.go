//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// The int8 micro-kernels are generated with avo; their declarations are in
// i8gemm_amd64_stubs.go and their code in i8gemm_amd64.s. To change them, edit
// _asm/i8gemm/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./i8gemm -out ../i8gemm_amd64.s -stubs ../i8gemm_amd64_stubs.go -pkg kernels"

// hasAVX512VNNI reports whether the VNNI int8 kernels can run on this CPU.
var hasAVX512VNNI = hasAVX2FMA && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW &&
	cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VNNI

// The VNNI kernels in use are the ZMM ones: on Zen 4 (512-bit operations
// double-pumped) the YMM ones measured no faster (BenchmarkI8GemmKernelVNNI).

func i8gemmKernelVNNII32(kg int, a, b *int8, corr *int32, c *int32, ldc int, add bool) {
	i8gemmKernelVNNIZI32(kg, a, b, corr, c, ldc, add)
}

func i8gemmKernelVNNIF32(kg int, a, b *int8, corr *int32, c *float32, ldc int, rs, cs, bias *float32, add bool) {
	i8gemmKernelVNNIZF32(kg, a, b, corr, c, ldc, rs, cs, bias, add)
}
