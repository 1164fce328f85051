//go:build mpi

package parallel

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// The MPI tests run under mpirun (.ci/run has the full command line), e.g.
//
//	go test -c -tags mpi -o parallel-mpi.test ./parallel
//	mpirun … -np 2 ./parallel-mpi.test -test.run MPI
//
// Each process also computes the in-process result that the ranks must
// reproduce bit for bit.

var mpiComm *MPIComm

func TestMain(m *testing.M) {
	c, err := NewMPI()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	mpiComm = c
	code := m.Run()
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 2
	}
	if err := FinalizeMPI(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 2
	}
	os.Exit(code)
}

func TestMPICollectivesMatchInProcess(t *testing.T) {
	n, r := mpiComm.Size(), mpiComm.Rank()
	// Rank q's buffer; values whose sums round differently by order.
	bufOf := func(q int) []float32 {
		b := make([]float32, 37)
		for i := range b {
			b[i] = float32(1+q) * (1 + float32(i)*1e-3) / float32(3+i%5)
		}
		return b
	}
	counts := evenCounts(37, n)
	offs, _ := checkCounts("test", counts, n, 37)
	// Expected: the rank-order sum.
	all := make([][]float32, n)
	for q := range n {
		all[q] = bufOf(q)
	}
	want := make([]float32, 37)
	sumInto(want, all, 0, 37)

	got := bufOf(r)
	require.NoError(t, mpiComm.ReduceScatter(got, counts))
	for i := offs[r]; i < offs[r+1]; i++ {
		if got[i] != want[i] {
			t.Fatalf("rank %d: reduce-scatter [%d] = %v, want %v", r, i, got[i], want[i])
		}
	}
	got = bufOf(r)
	require.NoError(t, mpiComm.AllReduce(got))
	if Hash(got) != Hash(want) {
		t.Fatalf("rank %d: all-reduce differs from the rank-order sum", r)
	}
	got = bufOf(r)
	require.NoError(t, mpiComm.Broadcast(got, n-1))
	if Hash(got) != Hash(bufOf(n-1)) {
		t.Fatalf("rank %d: broadcast differs", r)
	}
	require.NoError(t, mpiComm.Barrier())
}

func TestMPIStagesMatchInProcess(t *testing.T) {
	n, r := mpiComm.Size(), mpiComm.Rank()
	const steps = 3
	cfg := testConfig(n, 10, 2)
	want := Hash(trainShared(t, cfg, steps).weights)
	var allocated [4]int64
	for stage := range 4 {
		c := cfg
		c.Stage = stage
		// Each rank starts from different weights: rank 0's are broadcast.
		m := newTestModel(t)
		if r > 0 {
			for i := range m.Trainable().Data {
				m.Trainable().Data[i] = float32(r)
			}
		}
		tr, err := NewRank(m, mpiComm, c)
		require.NoError(t, err)
		data := newTestData(t, 3)
		for range steps {
			if _, err := tr.Step(context.Background(), data); err != nil {
				t.Fatal(err)
			}
		}
		rep := tr.Memory() // between steps
		allocated[stage] = rep.Allocated.Total()
		require.NoError(t, tr.Close())
		got := Hash(m.Trainable().Data)
		// All ranks bit-identical: gather every rank's hash.
		hashes := make([]float32, 2*n)
		putUint64(hashes[2*r:], got)
		require.NoError(t, mpiComm.AllGather(hashes, fill(n, 2)))
		for q := range n {
			if getUint64(hashes[2*q:]) != want {
				t.Errorf("stage %d: rank %d's weights differ from the in-process workers'", stage, q)
			}
		}
		t.Logf("stage %d, %d ranks: rank %d memory model %d B, allocated %d B (+%d B transient)", stage, n, r, rep.Model.Total(), rep.Allocated.Total(), rep.Transient)
	}
	if n == 2 && runtime.GOOS == "linux" {
		if ratio := float64(allocated[3]) / float64(allocated[0]); ratio > 0.55 {
			t.Errorf("rank %d: stage 3 keeps %.2f× stage 0's memory allocated, want ≤ 0.55", r, ratio)
		}
	}
}

func TestMPIConfigMismatch(t *testing.T) {
	n, r := mpiComm.Size(), mpiComm.Rank()
	if n < 2 {
		t.Skip("needs 2 ranks")
	}
	cfg := testConfig(n, 4, 1)
	if r == 1 {
		cfg.Accum = 2
	}
	tr, err := NewRank(newTestModel(t), mpiComm, cfg)
	if err == nil {
		tr.Close()
		t.Fatal("mismatched configurations accepted")
	}
}
