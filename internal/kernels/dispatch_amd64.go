//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// hasAVX2FMA reports whether the assembly kernels can run on this CPU.
var hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA
