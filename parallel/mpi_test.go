//go:build mpi

package parallel

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/galleon-ml/galleon/model"
	"github.com/stretchr/testify/assert"
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
	allocated := checkMPIStages(t, testConfig(n, 10, 2))
	if n == 2 && runtime.GOOS == "linux" {
		if ratio := float64(allocated[3]) / float64(allocated[0]); ratio > 0.55 {
			t.Errorf("rank %d: stage 3 keeps %.2f× stage 0's memory allocated, want ≤ 0.55", r, ratio)
		}
	}
}

// checkMPIStages trains the test model (changed by mut) for 3 steps at
// every ZeRO stage over MPI and checks that every rank ends with the
// weights of the in-process workers, bit for bit; it returns each stage's
// allocated memory between steps.
func checkMPIStages(t *testing.T, cfg Config, mut ...func(*model.Config)) [4]int64 {
	want := Hash(trainShared(t, cfg, 3, mut...).weights)
	return checkMPIStagesOn(t, cfg, func() model.Batcher { return newTestData(t, 3) }, want, mut...)
}

// checkMPIStagesOn is checkMPIStages on the data newData returns, against
// the in-process workers' weights' hash want.
func checkMPIStagesOn(t *testing.T, cfg Config, newData func() model.Batcher, want uint64, mut ...func(*model.Config)) [4]int64 {
	n, r := mpiComm.Size(), mpiComm.Rank()
	const steps = 3
	var allocated [4]int64
	for stage := range 4 {
		c := cfg
		c.Stage = stage
		// Each rank starts from different weights: rank 0's are broadcast.
		m := newTestModel(t, mut...)
		if r > 0 {
			for i := range m.Trainable().Data {
				m.Trainable().Data[i] = float32(r)
			}
		}
		tr, err := NewRank(m, mpiComm, c)
		require.NoError(t, err)
		data := newData()
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
	return allocated
}

// Bfloat16 gradient communication over MPI: every stage matches the
// in-process workers with bf16 communication bit for bit.
func TestMPIBF16StagesMatchInProcess(t *testing.T) {
	cfg := testConfig(mpiComm.Size(), 10, 2)
	cfg.CommPrecision = model.PrecisionBF16
	checkMPIStages(t, cfg)
}

// Padded data over MPI: the ranks weight their rows by their share of the
// step's targets as the in-process workers do, at every stage.
func TestMPIPaddedStagesMatchInProcess(t *testing.T) {
	cfg := testConfig(mpiComm.Size(), 10, 2)
	want := Hash(trainPadded(t, cfg, 3).weights)
	checkMPIStagesOn(t, cfg, func() model.Batcher { return newPaddedData(t) }, want)
}

// The Llama family (GQA, RMSNorm, RoPE, SwiGLU) over MPI at every stage.
func TestMPILlamaStagesMatchInProcess(t *testing.T) {
	checkMPIStages(t, testConfig(mpiComm.Size(), 10, 2), llamaConfig)
}

// MPI's bf16 collectives reduce as the in-process group does, bit for bit,
// and send half the bytes of the float32 ones.
func TestMPIBF16CollectivesMatchInProcess(t *testing.T) {
	n, r := mpiComm.Size(), mpiComm.Rank()
	const size = 1500
	counts := evenCounts(size, n)
	// The in-process result of the same inputs.
	want := make([][]float32, n)
	errs := collective(t, n, func(c Communicator) error {
		b := bf16Inputs(c.Rank(), size)
		if err := c.(BF16Communicator).ReduceScatterBF16(b, counts); err != nil {
			return err
		}
		if err := c.(BF16Communicator).AllGatherBF16(b, counts); err != nil {
			return err
		}
		want[c.Rank()] = b
		return nil
	})
	for q, err := range errs {
		if err != nil {
			t.Fatalf("in process: rank %d: %v", q, err)
		}
	}
	before := mpiComm.BytesSent()
	b := bf16Inputs(r, size)
	require.NoError(t, mpiComm.ReduceScatter(b, counts))
	require.NoError(t, mpiComm.AllGather(b, counts))
	fp32 := mpiComm.BytesSent() - before
	b = bf16Inputs(r, size)
	require.NoError(t, mpiComm.ReduceScatterBF16(b, counts))
	require.NoError(t, mpiComm.AllGatherBF16(b, counts))
	bf16 := mpiComm.BytesSent() - before - fp32
	if Hash(b) != Hash(want[0]) {
		t.Errorf("rank %d: bf16 all-reduce over MPI differs from the in-process one", r)
	}
	if n > 1 && (fp32 == 0 || 2*bf16 != fp32) {
		t.Errorf("rank %d: %d bytes sent in float32, %d in bfloat16, want half", r, fp32, bf16)
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

// BenchmarkMPIAllReduce times stage 0's gradient all-reduce of a
// small-preset-sized gradient (3,290,624 elements) over MPI in each
// communication precision. Every rank must run the same iterations: pass a
// fixed count, e.g.
//
//	mpirun … -np 2 ./parallel-mpi.test -test.run '^$' -test.bench MPIAllReduce -test.benchtime 20x
func BenchmarkMPIAllReduce(b *testing.B) {
	const psi = 3290624
	for _, p := range []model.Precision{model.PrecisionFP32, model.PrecisionBF16} {
		b.Run(p.String(), func(b *testing.B) {
			tr := &Trainer{cfg: Config{CommPrecision: p}}
			w := &worker{comm: mpiComm}
			buf := bf16Inputs(mpiComm.Rank(), psi)
			before := mpiComm.BytesSent()
			b.ResetTimer()
			for range b.N {
				if err := tr.allReduceGrad(w, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(mpiComm.BytesSent()-before)/float64(b.N), "sent-B/op")
		})
	}
}

// OptimizerState over MPI: at every stage each rank gathers the whole
// moments (stages 1–3 all-gather the ranks' shards), equal bit for bit to
// the in-process workers', and SetOptimizerState takes them back.
func TestMPIOptimizerState(t *testing.T) {
	cfg := testConfig(mpiComm.Size(), 10, 2)
	m := newTestModel(t)
	shared, err := New(m, cfg)
	require.NoError(t, err)
	data := newTestData(t, 3)
	for range 2 {
		_, err := shared.Step(context.Background(), data)
		require.NoError(t, err)
	}
	want, err := shared.OptimizerState()
	require.NoError(t, err)
	require.NoError(t, shared.Close())
	for stage := range 4 {
		c := cfg
		c.Stage = stage
		tr, err := NewRank(newTestModel(t), mpiComm, c)
		require.NoError(t, err)
		data := newTestData(t, 3)
		for range 2 {
			_, err := tr.Step(context.Background(), data)
			require.NoError(t, err)
		}
		got, err := tr.OptimizerState()
		require.NoError(t, err)
		assert.Equal(t, want.Step, got.Step, "stage %d", stage)
		assert.Equal(t, Hash(want.M), Hash(got.M), "stage %d: first moments", stage)
		assert.Equal(t, Hash(want.V), Hash(got.V), "stage %d: second moments", stage)
		require.NoError(t, tr.SetOptimizerState(got))
		again, err := tr.OptimizerState()
		require.NoError(t, err)
		assert.Equal(t, Hash(got.V), Hash(again.V), "stage %d: set then get", stage)
		require.NoError(t, tr.Close())
	}
}
