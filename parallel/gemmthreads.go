package parallel

// setGEMMThreads caps the threads one kernels.Sgemm call uses (n ≤ 0:
// GOMAXPROCS) and returns the previous cap; gemmthreads_kernels.go wires it
// to kernels.SetMaxThreads.
var setGEMMThreads func(n int) int

// LimitGEMMThreads caps the threads of one SGEMM call at n (n ≤ 0: all of
// GOMAXPROCS) for the whole process and returns the previous cap. ok is
// false, and nothing changes, when the kernels offer no such cap. Data
// parallelism on a machine with as many cores as workers wants 1: each
// worker then keeps one core busy with its own products.
func LimitGEMMThreads(n int) (prev int, ok bool) {
	if setGEMMThreads == nil {
		return 0, false
	}
	return setGEMMThreads(n), true
}
