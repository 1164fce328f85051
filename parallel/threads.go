package parallel

import "github.com/galleon-ml/galleon/internal/kernels"

// LimitKernelThreads caps the goroutines of one kernel call at n (n ≤ 0: all
// of GOMAXPROCS, the default) for the whole process and returns the previous
// cap (0 for the default). The cap covers the GEMMs, the attention kernels
// and the graph's element-wise loops. Data parallelism on a machine with as
// many cores as workers wants 1: each worker then keeps one core busy with
// its own work, and none of it waits on another worker's.
func LimitKernelThreads(n int) (prev int) { return kernels.SetMaxThreads(n) }
