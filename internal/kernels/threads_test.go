package kernels

import (
	"runtime"
	"testing"
)

func TestSetMaxThreads(t *testing.T) {
	defer SetMaxThreads(SetMaxThreads(1))
	if got := Threads(); got != 1 {
		t.Fatalf("cap 1: %d threads", got)
	}
	if prev := SetMaxThreads(0); prev != 1 {
		t.Fatalf("previous cap %d, want 1", prev)
	}
	if got := Threads(); got != runtime.GOMAXPROCS(0) {
		t.Fatalf("no cap: %d threads, GOMAXPROCS %d", got, runtime.GOMAXPROCS(0))
	}
	SetMaxThreads(-3)
	SetMaxThreads(1 << 20)
	if got := Threads(); got != runtime.GOMAXPROCS(0) {
		t.Fatalf("a cap above GOMAXPROCS gives %d threads", got)
	}
	// Products stay correct under a cap (they take the one-thread path).
	SetMaxThreads(1)
	const m, n, k = 257, 130, 300
	a, b := make([]float32, m*k), make([]float32, k*n)
	for i := range a {
		a[i] = float32(i%7) - 3
	}
	for i := range b {
		b[i] = float32(i%5) - 2
	}
	c1, c2 := make([]float32, m*n), make([]float32, m*n)
	Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c1, n)
	SetMaxThreads(0)
	Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c2, n)
	for i := range c1 {
		if c1[i] != c2[i] {
			t.Fatalf("element %d: %v capped, %v uncapped (integer data must be exact)", i, c1[i], c2[i])
		}
	}
}
