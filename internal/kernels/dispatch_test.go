package kernels

import "testing"

// implementations lists the kernel sets this CPU and build can run.
func implementations() []bool {
	if hasAVX2FMA {
		return []bool{false, true}
	}
	return []bool{false}
}

// forEachImpl runs f once per available implementation, as a subtest named
// after it. Tests using it must not run in parallel: they flip useAVX2.
func forEachImpl(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	saved := useAVX2
	defer func() { useAVX2 = saved }()
	for _, asm := range implementations() {
		useAVX2 = asm
		t.Run(Implementation(), f)
	}
}
