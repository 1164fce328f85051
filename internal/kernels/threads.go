package kernels

import (
	"runtime"
	"sync/atomic"
)

// maxThreads caps the goroutines one kernel call uses; 0 means GOMAXPROCS.
// Like the registry's toggles (impl.go) it is dispatch state: data-parallel training sets it to 1 so
// that each worker keeps one core busy with its own work instead of every
// worker's kernels competing for all cores.
var maxThreads atomic.Int32

// SetMaxThreads caps the goroutines one kernel call uses at n (n ≤ 0:
// runtime.GOMAXPROCS, the default) for the whole process, and returns the
// previous cap (0 for the default). It covers Sgemm and the int8 GEMM here,
// and the callers that size their own parallel loops with Threads: the
// attention kernels' default worker count and the element-wise loops of
// internal/nn. It is safe to call while kernels run; calls already split
// keep their split.
func SetMaxThreads(n int) int {
	if n < 0 {
		n = 0
	}
	return int(maxThreads.Swap(int32(min(n, 1<<30))))
}

// Threads returns the number of goroutines one kernel call may use:
// GOMAXPROCS, or the cap of SetMaxThreads if lower.
func Threads() int {
	n := runtime.GOMAXPROCS(0)
	if c := int(maxThreads.Load()); c > 0 && c < n {
		return c
	}
	return n
}
