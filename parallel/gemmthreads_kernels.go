//go:build galleon_gemm_threads

package parallel

import "github.com/galleon-ml/galleon/internal/kernels"

// Remove the build tag above once internal/kernels has SetMaxThreads.
func init() { setGEMMThreads = kernels.SetMaxThreads }
