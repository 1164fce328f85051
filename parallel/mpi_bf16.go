//go:build mpi

package parallel

/*
#cgo pkg-config: mpi-c
#include <mpi.h>
#include <stdint.h>

static int galleon_alltoallv_bf16(const uint16_t *send, const int *sendCounts, const int *sendDispl,
		uint16_t *recv, const int *recvCounts, const int *recvDispl, MPI_Comm comm) {
	return MPI_Alltoallv(send, sendCounts, sendDispl, MPI_UINT16_T, recv, recvCounts, recvDispl, MPI_UINT16_T, comm);
}

static int galleon_allgatherv_bf16(uint16_t *buf, const int *counts, const int *displs, MPI_Comm comm) {
	return MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_UINT16_T, comm);
}
*/
import "C"

import (
	"runtime"
	"unsafe"

	"github.com/galleon-ml/galleon/internal/kernels"
)

func uint16Ptr(b []uint16) *C.uint16_t {
	if len(b) == 0 {
		return nil
	}
	return (*C.uint16_t)(unsafe.Pointer(&b[0]))
}

// bf16Scratch returns a bfloat16 buffer of n elements, reusing c's.
func (c *MPIComm) bf16Scratch(n int) []uint16 {
	if cap(c.scratch16) < n {
		c.scratch16 = make([]uint16, n)
	}
	return c.scratch16[:n]
}

// ReduceScatterBF16: see BF16Communicator. Every rank rounds its buffer to
// bfloat16, sends each part to its owner as 16-bit words (MPI_Alltoallv of
// MPI_UINT16_T), and the owner widens and sums the contributions in rank
// order in float32, as the in-process group does, bit for bit.
func (c *MPIComm) ReduceScatterBF16(buf []float32, counts []int) error {
	offs, err := checkCounts("bf16 reduce-scatter", counts, c.size, len(buf))
	if err != nil {
		return err
	}
	mine := counts[c.rank]
	scratch := c.bf16Scratch(len(buf) + mine*c.size)
	send, recv := scratch[:len(buf)], scratch[len(buf):]
	kernels.ToBF16(send, buf)
	sendCounts, err := cInts(counts)
	if err != nil {
		return err
	}
	sendDispl, err := cInts(offs[:c.size])
	if err != nil {
		return err
	}
	recvCounts := make([]C.int, c.size)
	recvDispl := make([]C.int, c.size)
	for q := range c.size {
		recvCounts[q], recvDispl[q] = C.int(mine), C.int(q*mine)
	}
	rc := C.galleon_alltoallv_bf16(uint16Ptr(send), &sendCounts[0], &sendDispl[0],
		uint16Ptr(recv), &recvCounts[0], &recvDispl[0], c.comm)
	runtime.KeepAlive(scratch)
	if err := mpiError("Alltoallv (bf16 reduce-scatter)", rc); err != nil {
		return err
	}
	parts := make([][]uint16, c.size)
	for q := range parts {
		parts[q] = recv[q*mine : (q+1)*mine]
	}
	sumBF16Into(buf[offs[c.rank]:offs[c.rank+1]], parts, 0, mine)
	c.sent.Add(reduceScatterBytes(counts, c.rank, 2))
	return nil
}

// AllGatherBF16: see BF16Communicator (MPI_Allgatherv of MPI_UINT16_T in
// place).
func (c *MPIComm) AllGatherBF16(buf []float32, counts []int) error {
	offs, err := checkCounts("bf16 all-gather", counts, c.size, len(buf))
	if err != nil {
		return err
	}
	cc, err := cInts(counts)
	if err != nil {
		return err
	}
	displ, err := cInts(offs[:c.size])
	if err != nil {
		return err
	}
	words := c.bf16Scratch(len(buf))
	lo, hi := offs[c.rank], offs[c.rank+1]
	kernels.ToBF16(words[lo:hi], buf[lo:hi])
	rc := C.galleon_allgatherv_bf16(uint16Ptr(words), &cc[0], &displ[0], c.comm)
	runtime.KeepAlive(words)
	if err := mpiError("Allgatherv (bf16)", rc); err != nil {
		return err
	}
	kernels.FromBF16(buf, words)
	c.sent.Add(allGatherBytes(counts, c.rank, 2))
	return nil
}

// BytesSent: see WireCounter.
func (c *MPIComm) BytesSent() int64 { return c.sent.Load() }

var _ BF16Communicator = (*MPIComm)(nil)
