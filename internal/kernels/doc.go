// Package kernels holds galleon's compute kernels: a float32 GEMM and the
// vector routines that attention, quantization and the model's fused ops run
// in their inner loops.
//
// Each kernel has a portable Go implementation and, on amd64 CPUs with AVX2
// and FMA, an assembly implementation generated with avo (see _asm/). The
// choice is made once at start-up from the CPU's features; building with the
// purego tag, or on another architecture, leaves only the Go code.
//
// Slices are row-major float32. Kernels panic on arguments that break their
// documented contract (as BLAS does); the public packages validate user input
// and return errors before calling them.
package kernels
