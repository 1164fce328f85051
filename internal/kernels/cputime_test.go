package kernels

import (
	"time"

	"github.com/galleon-ml/galleon/internal/cputime"
)

// processCPU returns the CPU time the process has used so far (0 where the
// platform does not report it; benchmarks then omit their CPU-time metric).
func processCPU() time.Duration { return cputime.Process() }
