// Package cputime reads the CPU time of the running process, for benchmarks
// on a machine shared with other work: there a multi-threaded benchmark's
// CPU time per operation varies far less than its wall-clock time.
package cputime

import "time"

// Process returns the user and system CPU time the process has used so
// far, summed over its threads, or 0 where the platform does not report it
// (benchmarks then omit their CPU-time metric).
func Process() time.Duration { return process() }
