//go:build mpi

package parallel

/*
#cgo pkg-config: mpi-c
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>

static MPI_Comm galleon_world(void) { return MPI_COMM_WORLD; }
static MPI_Comm galleon_comm_null(void) { return MPI_COMM_NULL; }
static MPI_Datatype galleon_float(void) { return MPI_FLOAT; }
static MPI_Datatype galleon_uint16(void) { return MPI_UINT16_T; }
static MPI_Errhandler galleon_errors_return(void) { return MPI_ERRORS_RETURN; }
static int galleon_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
static int galleon_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static int galleon_success(void) { return MPI_SUCCESS; }
static int galleon_max_error_string(void) { return MPI_MAX_ERROR_STRING; }

static int galleon_allgatherv(void *buf, const int *counts, const int *displs, MPI_Datatype type, MPI_Comm comm) {
	return MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, type, comm);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// MPIComm is a Communicator over MPI (build tag mpi): one rank per process,
// launched with mpirun (.ci/run has the command line). It duplicates
// MPI_COMM_WORLD and sets MPI_ERRORS_RETURN on the copy, so every failing
// call returns an error instead of ending the job. Reductions are computed
// as in process, bit for bit: a reduce-scatter exchanges the parts with
// MPI_Alltoallv and each rank adds its part's contributions in rank order,
// so results do not depend on MPI's reduction algorithm. Calls must not be
// made concurrently (the trainer makes them from one goroutine at a time).
type MPIComm struct {
	comm       C.MPI_Comm
	rank, size int
	scratch    []float32
	scratch16  []uint16     // bfloat16 send and receive buffers (mpi_bf16.go)
	sent       atomic.Int64 // BytesSent
}

var (
	mpiInitMu sync.Mutex
	mpiInited bool
)

// mpiError turns an MPI return code into an error (nil on MPI_SUCCESS).
func mpiError(what string, rc C.int) error {
	if rc == C.galleon_success() {
		return nil
	}
	buf := make([]byte, int(C.galleon_max_error_string())+1)
	var n C.int
	if C.MPI_Error_string(rc, (*C.char)(unsafe.Pointer(&buf[0])), &n) != C.galleon_success() {
		return fmt.Errorf("parallel: MPI %s: error code %d", what, int(rc))
	}
	return fmt.Errorf("parallel: MPI %s: %s (code %d)", what, C.GoStringN((*C.char)(unsafe.Pointer(&buf[0])), n), int(rc))
}

// NewMPI initializes MPI if needed (requesting MPI_THREAD_MULTIPLE, and
// requiring at least MPI_THREAD_SERIALIZED since goroutines move between
// threads) and returns a communicator over all of the job's processes.
func NewMPI() (*MPIComm, error) {
	mpiInitMu.Lock()
	defer mpiInitMu.Unlock()
	var flag C.int
	if err := mpiError("Initialized", C.MPI_Initialized(&flag)); err != nil {
		return nil, err
	}
	if flag == 0 {
		var provided C.int
		if err := mpiError("Init_thread", C.MPI_Init_thread(nil, nil, C.galleon_thread_multiple(), &provided)); err != nil {
			return nil, err
		}
		if provided < C.galleon_thread_serialized() {
			return nil, fmt.Errorf("parallel: MPI provides thread level %d, need MPI_THREAD_SERIALIZED or more", int(provided))
		}
		mpiInited = true
	}
	c := &MPIComm{}
	if err := mpiError("Comm_dup", C.MPI_Comm_dup(C.galleon_world(), &c.comm)); err != nil {
		return nil, err
	}
	if err := mpiError("Comm_set_errhandler", C.MPI_Comm_set_errhandler(c.comm, C.galleon_errors_return())); err != nil {
		return nil, err
	}
	var rank, size C.int
	if err := mpiError("Comm_rank", C.MPI_Comm_rank(c.comm, &rank)); err != nil {
		return nil, err
	}
	if err := mpiError("Comm_size", C.MPI_Comm_size(c.comm, &size)); err != nil {
		return nil, err
	}
	c.rank, c.size = int(rank), int(size)
	return c, nil
}

// FinalizeMPI finalizes MPI if NewMPI initialized it; no MPI call may follow.
func FinalizeMPI() error {
	mpiInitMu.Lock()
	defer mpiInitMu.Unlock()
	if !mpiInited {
		return nil
	}
	mpiInited = false
	return mpiError("Finalize", C.MPI_Finalize())
}

// Close frees the duplicated communicator.
func (c *MPIComm) Close() error {
	if c.comm == C.galleon_comm_null() {
		return nil
	}
	err := mpiError("Comm_free", C.MPI_Comm_free(&c.comm))
	c.comm = C.galleon_comm_null()
	return err
}

// Rank returns this process's rank.
func (c *MPIComm) Rank() int { return c.rank }

// Size returns the number of processes.
func (c *MPIComm) Size() int { return c.size }

// Abort ends every process of the job (MPI_Abort): a rank that panicked
// cannot be waited for.
func (c *MPIComm) Abort(err error) {
	fmt.Fprintf(os.Stderr, "parallel: rank %d aborts the MPI job: %v\n", c.rank, err)
	C.MPI_Abort(c.comm, 1)
}

// Barrier returns when every process has entered it.
func (c *MPIComm) Barrier() error { return mpiError("Barrier", C.MPI_Barrier(c.comm)) }

func cInts(xs []int) ([]C.int, error) {
	out := make([]C.int, len(xs))
	for i, x := range xs {
		if x > 1<<31-1 {
			return nil, fmt.Errorf("parallel: MPI count %d exceeds an int", x)
		}
		out[i] = C.int(x)
	}
	return out, nil
}

// mpiWord is an element type the collectives move: float32 words, or the
// bfloat16 words (uint16) of the BF16Communicator methods (mpi_bf16.go).
type mpiWord interface{ float32 | uint16 }

// mpiType is T's MPI datatype.
func mpiType[T mpiWord]() C.MPI_Datatype {
	var zero T
	if _, ok := any(zero).(uint16); ok {
		return C.galleon_uint16()
	}
	return C.galleon_float()
}

func wordsPtr[T mpiWord](b []T) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// exchangeParts is a reduce-scatter's exchange (MPI_Alltoallv): rank q's
// part of send (counts[q] elements at offs[q]) goes to rank q, and recv
// receives every rank's contribution to this rank's part, mine elements
// each, in rank order. The caller sums them.
func exchangeParts[T mpiWord](c *MPIComm, what string, send, recv []T, counts, offs []int) error {
	mine := counts[c.rank]
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
	t := mpiType[T]()
	rc := C.MPI_Alltoallv(wordsPtr(send), &sendCounts[0], &sendDispl[0], t,
		wordsPtr(recv), &recvCounts[0], &recvDispl[0], t, c.comm)
	runtime.KeepAlive(send)
	runtime.KeepAlive(recv)
	return mpiError("Alltoallv ("+what+")", rc)
}

// allGatherWords all-gathers buf in place (MPI_Allgatherv): rank q
// contributes counts[q] elements at offs[q].
func allGatherWords[T mpiWord](c *MPIComm, what string, buf []T, counts, offs []int) error {
	cc, err := cInts(counts)
	if err != nil {
		return err
	}
	displ, err := cInts(offs[:c.size])
	if err != nil {
		return err
	}
	rc := C.galleon_allgatherv(wordsPtr(buf), &cc[0], &displ[0], mpiType[T](), c.comm)
	runtime.KeepAlive(buf)
	return mpiError(what, rc)
}

// ReduceScatter: see Communicator. Every rank sends each part to its owner
// (MPI_Alltoallv) and sums the contributions to its own part in rank order.
func (c *MPIComm) ReduceScatter(buf []float32, counts []int) error {
	offs, err := checkCounts("reduce-scatter", counts, c.size, len(buf))
	if err != nil {
		return err
	}
	mine := counts[c.rank]
	if cap(c.scratch) < mine*c.size {
		c.scratch = make([]float32, mine*c.size)
	}
	recv := c.scratch[:mine*c.size]
	if err := exchangeParts(c, "reduce-scatter", buf, recv, counts, offs); err != nil {
		return err
	}
	parts := make([][]float32, c.size)
	for q := range parts {
		parts[q] = recv[q*mine : (q+1)*mine]
	}
	sumInto(buf[offs[c.rank]:offs[c.rank+1]], parts, 0, mine)
	c.sent.Add(reduceScatterBytes(counts, c.rank, 4))
	return nil
}

// AllGather: see Communicator (MPI_Allgatherv in place).
func (c *MPIComm) AllGather(buf []float32, counts []int) error {
	offs, err := checkCounts("all-gather", counts, c.size, len(buf))
	if err != nil {
		return err
	}
	if err := allGatherWords(c, "Allgatherv", buf, counts, offs); err != nil {
		return err
	}
	c.sent.Add(allGatherBytes(counts, c.rank, 4))
	return nil
}

// AllReduce: see Communicator; a deterministic reduce-scatter followed by
// an all-gather.
func (c *MPIComm) AllReduce(buf []float32) error {
	counts := evenCounts(len(buf), c.size)
	if err := c.ReduceScatter(buf, counts); err != nil {
		return err
	}
	return c.AllGather(buf, counts)
}

// Broadcast copies root's buf to every rank (MPI_Bcast).
func (c *MPIComm) Broadcast(buf []float32, root int) error {
	if root < 0 || root >= c.size {
		return fmt.Errorf("parallel: broadcast from rank %d of %d", root, c.size)
	}
	if len(buf) > 1<<31-1 {
		return errors.New("parallel: MPI broadcast of more than 2³¹−1 elements")
	}
	rc := C.MPI_Bcast(wordsPtr(buf), C.int(len(buf)), C.galleon_float(), C.int(root), c.comm)
	runtime.KeepAlive(buf)
	if err := mpiError("Bcast", rc); err != nil {
		return err
	}
	if c.rank == root {
		c.sent.Add(int64(len(buf)) * int64(c.size-1) * 4)
	}
	return nil
}

var _ Communicator = (*MPIComm)(nil)
