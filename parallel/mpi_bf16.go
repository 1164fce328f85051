//go:build mpi

package parallel

import "github.com/galleon-ml/galleon/internal/kernels"

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
	if err := exchangeParts(c, "bf16 reduce-scatter", send, recv, counts, offs); err != nil {
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
	words := c.bf16Scratch(len(buf))
	lo, hi := offs[c.rank], offs[c.rank+1]
	kernels.ToBF16(words[lo:hi], buf[lo:hi])
	if err := allGatherWords(c, "Allgatherv (bf16)", words, counts, offs); err != nil {
		return err
	}
	kernels.FromBF16(buf, words)
	c.sent.Add(allGatherBytes(counts, c.rank, 2))
	return nil
}

// BytesSent: see WireCounter.
func (c *MPIComm) BytesSent() int64 { return c.sent.Load() }

var _ BF16Communicator = (*MPIComm)(nil)
