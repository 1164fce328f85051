//go:build unix

package kernels

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time the process has used so far. On a machine
// shared with other work, a single-threaded benchmark's rate per CPU second
// varies far less than its rate per wall-clock second.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
