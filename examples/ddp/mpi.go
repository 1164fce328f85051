//go:build mpi

package main

import (
	"context"
	"fmt"
	"os"

	"github.com/galleon-ml/galleon/internal/report"
	"github.com/galleon-ml/galleon/parallel"
)

// mpiResult is rank 0's JSON line under -mpi -json.
type mpiResult struct {
	Preset       string                `json:"preset"`
	Params       int                   `json:"params"`
	Ranks        int                   `json:"ranks"`
	Stage        int                   `json:"stage"`
	BatchPerRank int                   `json:"batch_per_rank"`
	Run          run                   `json:"run"`
	Memory       parallel.MemoryReport `json:"memory_rank0"`
	Stage0       parallel.Memory       `json:"stage0_memory_per_rank"`
	// RSS and PeakRSS are rank 0's resident set after training (between
	// steps) and its high-water mark (Linux only; 0 elsewhere).
	RSS     int64 `json:"rss_rank0"`
	PeakRSS int64 `json:"peak_rss_rank0"`
}

// runMPI trains as one rank of an MPI job at the chosen ZeRO stage; every
// rank prints its memory, rank 0 the throughput.
func runMPI(ctx context.Context, o options) (err error) {
	comm, err := parallel.NewMPI()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := comm.Close(); err == nil {
			err = cerr
		}
		if ferr := parallel.FinalizeMPI(); err == nil {
			err = ferr
		}
	}()
	p, data, err := setup(ctx, o)
	if err != nil {
		return err
	}
	threads := "1"
	defer parallel.LimitKernelThreads(parallel.LimitKernelThreads(1))
	m, err := data.newModel(p, o.seed+uint64(comm.Rank())) // rank 0's weights are broadcast
	if err != nil {
		return err
	}
	cfg := trainConfig(o, p, comm.Size())
	cfg.Stage = o.stage
	tr, err := parallel.NewRank(m, comm, cfg)
	if err != nil {
		return err
	}
	out := os.Stdout
	progress := out
	if comm.Rank() != 0 {
		progress, _ = os.Open(os.DevNull)
	}
	r, err := measure(ctx, o, tr, data, fmt.Sprintf("rank %d of %d, stage %d", comm.Rank(), comm.Size(), o.stage), progress)
	mem := tr.Memory() // between steps
	rss, peak, _ := report.ResidentSet()
	if cerr := tr.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	r.WeightsHash = fmt.Sprintf("%016x", parallel.Hash(m.Trainable().Data))
	r.KernelThreads = threads
	s0, _ := parallel.ZeROMemory(0, comm.Size(), m.NumParams())
	fmt.Fprintf(out, "rank %d: stage %d model state %s (stage 0: %s, %.2f×), allocated %s (params %s, grads %s, optimizer %s), transient %s, process RSS %s (peak %s), weights %s\n",
		comm.Rank(), o.stage, mib(mem.Model.Total()), mib(s0.Total()), float64(mem.Model.Total())/float64(s0.Total()),
		mib(mem.Allocated.Total()), mib(mem.Allocated.Params), mib(mem.Allocated.Grads), mib(mem.Allocated.Optimizer),
		mib(mem.Transient), mib(rss), mib(peak), r.WeightsHash)
	if err := comm.Barrier(); err != nil {
		return err
	}
	if comm.Rank() == 0 {
		fmt.Fprintf(out, "%d ranks: %.0f tokens/s (%.0f per rank), %.3f s/step, gradients in %s, rank 0 sent %.0f bytes/step\n",
			comm.Size(), r.TokensPerSec, r.TokensPerSec/float64(comm.Size()), r.SecondsPerStep, r.CommPrecision, r.BytesPerStep)
		if o.jsonOut {
			return report.PrintJSON(out, mpiResult{Preset: p.Name, Params: m.NumParams(), Ranks: comm.Size(), Stage: o.stage,
				BatchPerRank: p.Batch, Run: r, Memory: mem, Stage0: s0, RSS: rss, PeakRSS: peak})
		}
	}
	return nil
}
