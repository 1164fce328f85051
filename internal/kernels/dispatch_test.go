package kernels

import "testing"

// implementations lists the kernel sets this CPU and build can run, as
// (useAVX2, useAVX512) pairs.
func implementations() [][2]bool {
	impls := [][2]bool{{false, false}}
	if hasAVX2FMA {
		impls = append(impls, [2]bool{true, false})
	}
	if hasAVX512 {
		impls = append(impls, [2]bool{true, true})
	}
	return impls
}

// setImpl selects an implementation from implementations and returns a
// function restoring the previous one.
func setImpl(impl [2]bool) (restore func()) {
	saved2, saved512 := useAVX2, useAVX512
	useAVX2, useAVX512 = impl[0], impl[1]
	return func() { useAVX2, useAVX512 = saved2, saved512 }
}

// forEachImpl runs f once per available implementation, as a subtest named
// after it. Tests using it must not run in parallel: they flip useAVX2.
func forEachImpl(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, impl := range implementations() {
		restore := setImpl(impl)
		t.Run(Implementation(), f)
		restore()
	}
}
