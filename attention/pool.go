package attention

// Scratch memory is pooled: a call takes its buffers from the kernels'
// buffer pool (kernels.GetFloats) once (per call or per worker, never per
// tile) and returns them at the end. The call state (the problem, the
// per-worker scratch pointers, the loop of kernels.For) is pooled too, so a
// training loop or a generation calling the Into kernels allocates nothing
// after the first step.

// grow returns s resliced to n elements, reallocated if its capacity is too
// small. The contents are arbitrary.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// roundUp rounds n up to a multiple of m.
func roundUp(n, m int) int { return (n + m - 1) / m * m }
