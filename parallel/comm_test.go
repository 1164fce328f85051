package parallel

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// collective runs f on every rank of a new group of n and returns the
// ranks' errors.
func collective(t *testing.T, n int, f func(c Communicator) error) []error {
	t.Helper()
	g, err := NewGroup(n)
	require.NoError(t, err)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := g.Comm(r)
			if err != nil {
				errs[r] = err
				return
			}
			errs[r] = f(c)
		}()
	}
	wg.Wait()
	return errs
}

func TestGroupCollectives(t *testing.T) {
	const n, size = 3, 23
	bufOf := func(q int) []float32 {
		b := make([]float32, size)
		for i := range b {
			b[i] = float32(q+1) / float32(i+3)
		}
		return b
	}
	want := make([]float32, size)
	for i := range want {
		want[i] = bufOf(0)[i] + bufOf(1)[i] + bufOf(2)[i] // rank order
	}
	counts := []int{10, 0, 13}
	errs := collective(t, n, func(c Communicator) error {
		r := c.Rank()
		b := bufOf(r)
		if err := c.AllReduce(b); err != nil {
			return err
		}
		if Hash(b) != Hash(want) {
			return errors.New("all-reduce differs from the rank-order sum")
		}
		b = bufOf(r)
		if err := c.ReduceScatter(b, counts); err != nil {
			return err
		}
		lo := []int{0, 10, 10}[r]
		for i := lo; i < lo+counts[r]; i++ {
			if b[i] != want[i] {
				return errors.New("reduce-scatter differs")
			}
		}
		if err := c.AllGather(b, counts); err != nil {
			return err
		}
		if Hash(b) != Hash(want) {
			return errors.New("all-gather differs")
		}
		b = bufOf(r)
		if err := c.Broadcast(b, 2); err != nil {
			return err
		}
		if Hash(b) != Hash(bufOf(2)) {
			return errors.New("broadcast differs")
		}
		return c.Barrier()
	})
	for r, err := range errs {
		assert.NoError(t, err, "rank %d", r)
	}
}

func TestGroupDetectsMismatchedCalls(t *testing.T) {
	errs := collective(t, 2, func(c Communicator) error {
		b := make([]float32, 8)
		if c.Rank() == 0 {
			return c.AllGather(b, []int{4, 4})
		}
		return c.ReduceScatter(b, []int{4, 4})
	})
	for r, err := range errs {
		assert.ErrorContains(t, err, "called", "rank %d: want a mismatch", r)
	}
	errs = collective(t, 2, func(c Communicator) error {
		return c.AllReduce(make([]float32, 4+c.Rank()))
	})
	for r, err := range errs {
		assert.Error(t, err, "rank %d: buffers of different lengths", r)
	}
	_, err := NewGroup(0)
	assert.Error(t, err, "empty group")
	errs = collective(t, 2, func(c Communicator) error { return c.ReduceScatter(make([]float32, 4), []int{1, 1}) })
	assert.Error(t, errs[0], "counts not summing to the buffer")
}
