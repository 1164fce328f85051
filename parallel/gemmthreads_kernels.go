package parallel

import "github.com/galleon-ml/galleon/internal/kernels"

func init() { setGEMMThreads = kernels.SetMaxThreads }
