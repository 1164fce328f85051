//go:build mpi

package main

import (
	"flag"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/parallel"
)

// addMPIFlag defines -mpi, which builds with -tags mpi have.
func addMPIFlag(fs *flag.FlagSet, mpi *bool) {
	fs.BoolVar(mpi, "mpi", false, "train as one rank of an MPI job (mpirun -np N galleon finetune -mpi ...): each rank reads the same data and trains its rows of every batch, as examples/ddp; rank 0 writes the outputs")
}

// mpiTrainer is a rank's trainer; Close also ends MPI.
type mpiTrainer struct {
	*parallel.Trainer
	comm *parallel.MPIComm
}

// Close closes the trainer, the communicator and MPI, returning the first
// error.
func (t mpiTrainer) Close() error {
	err := t.Trainer.Close()
	if cerr := t.comm.Close(); err == nil {
		err = cerr
	}
	if ferr := parallel.FinalizeMPI(); err == nil {
		err = ferr
	}
	return err
}

// newMPITrainer joins the MPI job and returns this rank's trainer, its
// rank and the number of ranks.
// Every rank loads the same model and data with the same seed, so the
// batches agree; NewRank takes rank 0's weights (the adapter's random
// initialization included) and gives each rank its rows of every batch.
func newMPITrainer(m *model.Model, cfg parallel.Config) (stepper, int, int, error) {
	comm, err := parallel.NewMPI()
	if err != nil {
		return nil, 0, 0, err
	}
	t, err := parallel.NewRank(m, comm, cfg)
	if err != nil {
		comm.Close()
		parallel.FinalizeMPI()
		return nil, 0, 0, err
	}
	return mpiTrainer{Trainer: t, comm: comm}, comm.Rank(), comm.Size(), nil
}
