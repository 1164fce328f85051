package kernels

import (
	"runtime"
	"sync/atomic"
)

// maxThreads caps the goroutines one GEMM call uses; 0 means GOMAXPROCS.
// Like useAVX2 it is dispatch state: data-parallel training sets it to 1 so
// that each worker keeps one core busy with its own products instead of
// every worker's products competing for all cores.
var maxThreads atomic.Int32

// SetMaxThreads caps the goroutines one Sgemm or int8 GEMM call uses at n
// (n ≤ 0: runtime.GOMAXPROCS, the default) for the whole process, and
// returns the previous cap (0 for the default). It is safe to call while
// products run; calls already split keep their split.
func SetMaxThreads(n int) int {
	if n < 0 {
		n = 0
	}
	return int(maxThreads.Swap(int32(min(n, 1<<30))))
}

// gemmThreads returns the number of goroutines a product may use.
func gemmThreads() int {
	n := runtime.GOMAXPROCS(0)
	if c := int(maxThreads.Load()); c > 0 && c < n {
		return c
	}
	return n
}
