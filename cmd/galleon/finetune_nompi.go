//go:build !mpi

package main

import (
	"flag"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/parallel"
)

// addMPIFlag defines -mpi only in builds with -tags mpi.
func addMPIFlag(*flag.FlagSet, *bool) {}

// newMPITrainer is unreachable without -tags mpi: -mpi is not a flag then.
func newMPITrainer(*model.Model, parallel.Config) (stepper, int, int, error) {
	return nil, 0, 0, usageError{"finetune: -mpi needs a galleon built with -tags mpi"}
}
