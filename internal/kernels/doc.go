// Package kernels holds galleon's compute kernels: a float32 GEMM, an int8
// GEMM, a bfloat16 GEMM (bf16gemm.go: VDPBF16PS on AVX512_BF16 CPUs,
// float32 conversion elsewhere) and the vector routines that attention, quantization and the model's
// fused ops run in their inner loops.
//
// Each kernel family has a portable Go implementation and, on amd64, assembly
// implementations generated with avo (see _asm/), which it registers in the
// package's dispatch registry (impl.go, modelled on Go's crypto/internal/impl)
// with the instruction-set level they need: LevelAVX2 (AVX2 and FMA) or
// LevelAVX512. The level in force is the CPU's best, capped by the
// environment variable GALLEON_KERNELS=generic|avx2|avx512, read once at
// start-up; SetLevel and Select change it for tests and benchmarks, and
// ForEach runs a test once per implementation. Building with the purego tag,
// or on another architecture, leaves only the Go code.
//
// Slices are row-major float32. Kernels panic on arguments that break their
// documented contract (as BLAS does); the public packages validate user input
// and return errors before calling them.
package kernels
