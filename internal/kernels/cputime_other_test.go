//go:build !unix

package kernels

import "time"

// processCPU is not measured here; benchmarks then omit their CPU-time
// metric.
func processCPU() time.Duration { return 0 }
