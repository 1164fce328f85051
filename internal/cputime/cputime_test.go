package cputime

import (
	"testing"
	"time"
)

// TestProcessAdvances checks that 50 ms of busy work shows up in the
// process's CPU time where the platform reports it.
func TestProcessAdvances(t *testing.T) {
	c0 := Process()
	x := 1.0
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
		for j := 0; j < 1000; j++ {
			x = x*1.0000001 + 1e-9
		}
	}
	c1 := Process()
	if c0 == 0 && c1 == 0 {
		t.Skip("the platform reports no CPU time")
	}
	if c1 <= c0 {
		t.Errorf("CPU time went from %v to %v over busy work (x=%v)", c0, c1, x)
	}
}
