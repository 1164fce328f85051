//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// hasAVX2FMA reports whether the assembly kernels can run on this CPU.
var hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// hasAVX512 reports whether the AVX-512 SGEMM kernels can run: AVX-512 F
// (which x/sys/cpu reports only when the OS saves the ZMM and mask
// registers) on top of AVX2 and FMA.
var hasAVX512 = hasAVX2FMA && cpu.X86.HasAVX512F
