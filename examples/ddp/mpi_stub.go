//go:build !mpi

package main

import (
	"context"
	"errors"
)

func runMPI(context.Context, options) error {
	return errors.New("-mpi needs a build with -tags mpi (and Open MPI's libopenmpi-dev)")
}
