package parallel

import (
	"context"
	"errors"
	"fmt"

	"github.com/galleon-ml/galleon/model"
)

// stage3Steps is ZeRO stage 3 under NewRank: the rank keeps only its
// parameter, gradient and optimizer shards between steps. The parameters no
// layer gathers itself are all-gathered for the step, each linear layer
// gathers its weights inside the graph when the forward or backward pass
// reaches it (layers.go), the gradients are reduce-scattered, and each rank
// updates its shard; the next step gathers again, so there is nothing to
// gather after the update.
type stage3Steps struct{ t *Trainer }

func (s stage3Steps) hold() func() { return holdGrads(s.t) }

// compute first lets the ranks agree that every one of them runs the
// forward pass: its layers gather their weights inside the graph, where a
// rank that skipped it would leave the others waiting.
func (s stage3Steps) compute(ctx context.Context, w *worker, step int, pre error) (float64, error) {
	t := s.t
	if err := agreeToCompute(w, pre); err != nil {
		return 0, err
	}
	defer t.release.release()
	if err := t.gatherRest(w); err != nil {
		return 0, err
	}
	loss, err := t.computeRows(ctx, w, step)
	if err != nil && t.layers != nil && !errors.Is(err, model.ErrNonFinite) && !errors.Is(err, ctx.Err()) {
		// The graph stopped between two of its collectives: the other
		// ranks cannot finish theirs.
		w.comm.Abort(err)
	}
	return loss, err
}

func (s stage3Steps) reduce(w *worker) error { return s.t.reduceScatter(w) }

func (s stage3Steps) gather(*worker) error { return nil }

// agreeToCompute all-gathers whether each rank is ready to compute; it
// returns pre on the rank that is not, and an error wrapping ErrPeer on the
// others.
func agreeToCompute(w *worker, pre error) error {
	n := w.comm.Size()
	failed := make([]float32, n)
	if pre != nil {
		failed[w.rank] = 1
	}
	if err := w.comm.AllGather(failed, fill(n, 1)); err != nil {
		return err
	}
	if pre != nil {
		return pre
	}
	for q := range n {
		if failed[q] != 0 {
			return fmt.Errorf("%w: rank %d", ErrPeer, q)
		}
	}
	return nil
}

// gatherRest all-gathers, at the start of a stage-3 step, the parameters
// that no layer gathers itself (all of them when no layer was replaced).
func (t *Trainer) gatherRest(w *worker) error {
	if t.layers == nil {
		return t.gatherParams(w)
	}
	t.release.acquire()
	return t.allGatherParams(w, t.rest)
}

// gatherParams all-gathers the parameter shards (stage 3) bucket by bucket.
func (t *Trainer) gatherParams(w *worker) error {
	t.release.acquire()
	return t.allGatherParams(w, t.buckets)
}
