//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// cpuLevel is the highest level this CPU runs: AVX-512 needs the F, BW, DQ
// and VL subsets (what Intel ships since Skylake-SP and AMD since Zen 4) on
// top of AVX2 and FMA.
var cpuLevel = func() Level {
	x := cpu.X86
	switch {
	case !x.HasAVX2 || !x.HasFMA:
		return LevelGeneric
	case x.HasAVX512F && x.HasAVX512BW && x.HasAVX512DQ && x.HasAVX512VL:
		return LevelAVX512
	}
	return LevelAVX2
}()
