package attention

import "sync"

// Scratch memory is pooled: a call takes its buffers from these pools once
// (per call or per worker, never per tile) and returns them at the end. The
// call state (the problem, the per-worker scratch pointers, the loop of
// parallelFor) is pooled too, so a training loop or a generation calling the
// Into kernels allocates nothing after the first step.

// floatPool recycles float32 slices of at least a requested length.
type floatPool struct{ p sync.Pool }

// get returns a slice of length n; its contents are arbitrary.
func (fp *floatPool) get(n int) *[]float32 {
	if x, ok := fp.p.Get().(*[]float32); ok {
		if cap(*x) >= n {
			*x = (*x)[:n]
			return x
		}
	}
	s := make([]float32, n)
	return &s
}

func (fp *floatPool) put(x *[]float32) { fp.p.Put(x) }

// grow returns s resliced to n elements, reallocated if its capacity is too
// small. The contents are arbitrary.
func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// roundUp rounds n up to a multiple of m.
func roundUp(n, m int) int { return (n + m - 1) / m * m }
