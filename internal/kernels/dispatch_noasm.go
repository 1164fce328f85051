//go:build !amd64 || purego

package kernels

// hasAVX2FMA is false where the assembly kernels are not built.
const hasAVX2FMA = false

// hasAVX512 is false where the assembly kernels are not built.
const hasAVX512 = false
