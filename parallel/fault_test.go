package parallel

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// panicBatcher panics on its nth call to NextBatch.
type panicBatcher struct {
	model.Batcher
	calls, nth int
}

func (b *panicBatcher) NextBatch(in, tg []int32) error {
	b.calls++
	if b.calls == b.nth {
		panic("batcher breaks")
	}
	return b.Batcher.NextBatch(in, tg)
}

func TestBatcherPanicBecomesAnError(t *testing.T) {
	m := newTestModel(t)
	tr, err := New(m, testConfig(2, 4, 2))
	require.NoError(t, err)
	defer tr.Close()
	before := Hash(m.Trainable().Data)
	_, err = tr.Step(context.Background(), &panicBatcher{Batcher: newTestData(t, 3), nth: 2})
	require.ErrorContains(t, err, "panic in NextBatch: batcher breaks")
	assert.Equal(t, before, Hash(m.Trainable().Data), "a failed step changed the weights")
	_, err = tr.Step(context.Background(), newTestData(t, 3))
	assert.NoError(t, err, "step after the failure")
}

func TestBatcherPanicOnOneRankStopsEveryRank(t *testing.T) {
	// The panic happens on rank 1 only, at its second step: rank 0 must
	// not wait for it, at stage 3 either (whose layers gather inside the
	// graph).
	for _, stage := range []int{0, 1, 3} {
		errs := collective(t, 2, func(comm Communicator) error {
			tr, err := newStageRank(t, comm, stage)
			if err != nil {
				return err
			}
			defer tr.Close()
			var data model.Batcher = newTestData(t, 3)
			if comm.Rank() == 1 {
				data = &panicBatcher{Batcher: data, nth: 2}
			}
			return tr.Train(context.Background(), data, 3, nil)
		})
		require.Error(t, errs[1], "stage %d", stage)
		assert.Contains(t, errs[1].Error(), "rank 1: step 2: data: panic in NextBatch", "stage %d", stage)
		assert.ErrorIs(t, errs[0], ErrPeer, "stage %d", stage)
		assert.Contains(t, errs[0].Error(), "rank 0: step 2", "stage %d", stage)
		// The package prefix once, not once per wrapping.
		assert.Equal(t, 1, strings.Count(errs[0].Error(), "parallel:"), "stage %d: %v", stage, errs[0])
	}
}

func TestCancelBetweenMicroBatches(t *testing.T) {
	tr, err := New(newTestModel(t), testConfig(2, 4, 3))
	require.NoError(t, err)
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	data := &cancelBatcher{Batcher: newTestData(t, 3), cancel: cancel}
	_, err = tr.Step(ctx, data)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, data.calls, "micro-batches drawn after the cancellation")
	assert.Zero(t, tr.StepsDone())
}

// cancelBatcher cancels its context on its first call.
type cancelBatcher struct {
	model.Batcher
	cancel func()
	calls  int
}

func (b *cancelBatcher) NextBatch(in, tg []int32) error {
	b.calls++
	b.cancel()
	return b.Batcher.NextBatch(in, tg)
}

// blockHook returns a test hook that blocks the given rank until release is
// closed, as a long forward or backward pass would, and a channel closed
// when the rank starts blocking.
func blockHook(rank int, release <-chan struct{}) (func(int, int) error, <-chan struct{}) {
	started := make(chan struct{})
	var once atomic.Bool
	return func(r, _ int) error {
		if r == rank {
			if once.CompareAndSwap(false, true) {
				close(started)
			}
			<-release
		}
		return nil
	}, started
}

func TestCancelMidStepReturnsAtOnce(t *testing.T) {
	// Worker 1 is still computing when the context is cancelled: Step
	// returns the context's error without waiting for it, leaves the
	// weights as they were, and the trainer's next step runs.
	startPools(t)
	m := newTestModel(t)
	tr, err := New(m, testConfig(2, 4, 1))
	require.NoError(t, err)
	defer tr.Close()
	before := Hash(m.Trainable().Data)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock() // before Close, which waits for the abandoned step
	hook, started := blockHook(1, release)
	tr.testHook = hook
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err = tr.Step(ctx, newTestData(t, 3))
	require.ErrorIs(t, err, context.Canceled)
	// A step whose context ends while the abandoned one still runs
	// returns too.
	_, err = tr.Step(ctx, newTestData(t, 3))
	require.ErrorIs(t, err, context.Canceled)
	unblock() // the abandoned computation may finish now
	// (The hook stays: the abandoned step may still read it; it blocks no
	// more.)
	_, err = tr.Step(context.Background(), newTestData(t, 3))
	require.NoError(t, err, "step after a cancelled one")
	assert.NotEqual(t, before, Hash(m.Trainable().Data))
	assert.Equal(t, 1, tr.StepsDone())
}

func TestCancelWhileWaitingForAPeer(t *testing.T) {
	// Rank 0's context is cancelled once it has computed and waits for
	// rank 1, which is still computing: rank 0 returns its context's
	// error, and rank 1's step fails with ErrAborted instead of waiting
	// for rank 0. (A context cancelled before Step is the clean stop of
	// TestRankCancellationStopsEveryRank.)
	for _, stage := range []int{0, 3} {
		release := make(chan struct{})
		computed := []chan struct{}{make(chan struct{}), make(chan struct{})}
		hook := func(r, _ int) error { // one step: each rank runs it once
			close(computed[r])
			if r == 1 {
				<-release
			}
			return nil
		}
		errs := collective(t, 2, func(comm Communicator) error {
			tr, err := newStageRank(t, comm, stage)
			if err != nil {
				return err
			}
			defer tr.Close()
			tr.testHook = hook
			ctx := context.Background()
			if comm.Rank() == 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				go func() {
					<-computed[0]
					<-computed[1]
					cancel()
				}()
				_, err := tr.Step(ctx, newTestData(t, 3))
				close(release)
				return err
			}
			_, err = tr.Step(ctx, newTestData(t, 3))
			return err
		})
		assert.ErrorIs(t, errs[0], context.Canceled, "stage %d", stage)
		assert.ErrorContains(t, errs[0], "rank 0: step 1", "stage %d", stage)
		assert.ErrorIs(t, errs[1], ErrAborted, "stage %d", stage)
		assert.ErrorIs(t, errs[1], context.Canceled, "stage %d: the abort names its cause", stage)
	}
}

func TestCancelledBeforeStepDoesNotWaitForAHungPeer(t *testing.T) {
	// Rank 0 starts a step with a cancelled context while rank 1 hangs in
	// its computation: rank 0 offers the clean stop at the first exchange,
	// and after the grace period aborts the group and returns.
	release := make(chan struct{})
	hook, started := blockHook(1, release)
	errs := collective(t, 2, func(comm Communicator) error {
		tr, err := newStageRank(t, comm, 0)
		if err != nil {
			return err
		}
		defer tr.Close()
		tr.testHook = hook
		if comm.Rank() == 1 {
			_, err := tr.Step(context.Background(), newTestData(t, 3))
			return err
		}
		tr.cancelGrace = 20 * time.Millisecond
		<-started
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = tr.Step(ctx, newTestData(t, 3))
		close(release)
		return err
	})
	require.ErrorIs(t, errs[0], context.Canceled)
	require.ErrorContains(t, errs[0], "did not reach the step")
	require.ErrorIs(t, errs[1], ErrAborted)
}
