package nn

import (
	"fmt"
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// checkTargets reports the first target that is neither IgnoreIndex nor in
// [0, V), and returns how many rows count towards the mean.
func checkTargets(fn string, targets []int32, V int) (int, error) {
	count := 0
	for i, t := range targets {
		switch {
		case t == IgnoreIndex:
		case t < 0 || int(t) >= V:
			return 0, fmt.Errorf("nn: %s: targets[%d]=%d outside [0, %d) and not IgnoreIndex: %w", fn, i, t, V, ErrRange)
		default:
			count++
		}
	}
	return count, nil
}

func checkCrossEntropy(fn string, nLogits, nProbs, nTargets, V int) error {
	n, err := rowsOf(fn, "logits", nLogits, V)
	if err != nil {
		return err
	}
	if err := checkLen(fn, "targets", nTargets, n); err != nil {
		return err
	}
	return checkLen(fn, "probs", nProbs, nLogits)
}

// CrossEntropyForward computes the mean over rows of −log softmax(logits)[t]
// for logits [N, V] and integer targets [N], leaving out rows whose target is
// IgnoreIndex; count is the number of rows in the mean (the loss is 0 when
// count is 0). probs [N, V] receives the softmax of every row, which
// CrossEntropyBackward needs; it may be logits itself (the same slice, not a
// partial overlap), which replaces the logits by their softmax. Each row is
// shifted by its maximum before exponentiating and the log-sum-exp is taken
// in float64, so large logits neither overflow nor lose the small
// differences.
func CrossEntropyForward(probs, logits []float32, targets []int32, V int) (loss float32, count int, err error) {
	const fn = "CrossEntropyForward"
	if err := checkCrossEntropy(fn, len(logits), len(probs), len(targets), V); err != nil {
		return 0, 0, err
	}
	if count, err = checkTargets(fn, targets, V); err != nil {
		return 0, 0, err
	}
	return crossEntropyForward(probs, logits, targets, V, count, nil), count, nil
}

// crossEntropyForward fills probs and returns the mean loss. With rowLoss
// ([N] scratch) the rows run in parallel and their losses are summed in row
// order afterwards; without, serially. Both give the same bits.
func crossEntropyForward(probs, logits []float32, targets []int32, V, count int, rowLoss []float64) float32 {
	var total float64
	if rowLoss == nil {
		for r := range targets {
			total += crossEntropyRow(probs, logits, targets, V, r)
		}
	} else {
		crossEntropyForwardLoops.Run(0, crossEntropyForwardBody{probs, logits, targets, rowLoss, V}, len(targets), rowGrain(V))
		for _, l := range rowLoss[:len(targets)] {
			total += l
		}
	}
	if count == 0 {
		return 0
	}
	return float32(total / float64(count))
}

// crossEntropyForwardBody is the loop body of crossEntropyForward, over
// rows.
type crossEntropyForwardBody struct {
	probs, logits []float32
	targets       []int32
	rowLoss       []float64
	V             int
}

var crossEntropyForwardLoops kernels.Chunks[crossEntropyForwardBody, *crossEntropyForwardBody]

func (b *crossEntropyForwardBody) Chunk(lo, hi int) {
	for r := lo; r < hi; r++ {
		b.rowLoss[r] = crossEntropyRow(b.probs, b.logits, b.targets, b.V, r)
	}
}

// crossEntropyRow writes row r's softmax and returns its loss (0 when
// ignored).
func crossEntropyRow(probs, logits []float32, targets []int32, V, r int) float64 {
	lr := logits[r*V : r*V+V]
	pr := probs[r*V : r*V+V]
	t := targets[r]
	var lt float32
	if t != IgnoreIndex {
		lt = lr[t] // before pr, which may be lr, is written
	}
	m := kernels.Max(lr)
	sum := kernels.ExpSubSum(pr, lr, m)
	kernels.Scale(1/sum, pr)
	if t == IgnoreIndex {
		return 0
	}
	return float64(m) + math.Log(float64(sum)) - float64(lt)
}

// CrossEntropyBackward accumulates dlogits += (probs − onehot(targets))·dloss/count,
// the gradient of CrossEntropyForward's mean loss scaled by the upstream
// gradient dloss; rows with target IgnoreIndex get nothing. probs is the
// softmax saved by the forward pass.
func CrossEntropyBackward(dlogits, probs []float32, targets []int32, V int, dloss float32) error {
	const fn = "CrossEntropyBackward"
	if err := checkCrossEntropy(fn, len(probs), len(dlogits), len(targets), V); err != nil {
		return err
	}
	count, err := checkTargets(fn, targets, V)
	if err != nil {
		return err
	}
	crossEntropyBackward(dlogits, probs, targets, V, count, dloss, true)
	return nil
}

// crossEntropyBackward writes (acc false) or adds (acc true) the gradient;
// with acc false, ignored rows are zeroed.
func crossEntropyBackward(dlogits, probs []float32, targets []int32, V, count int, dloss float32, acc bool) {
	var scale float32
	if count > 0 {
		scale = dloss / float32(count)
	}
	// With count 0 nothing counts: every row is like an ignored one.
	body := crossEntropyBackwardBody{dlogits, probs, targets, V, acc, count == 0, scale}
	crossEntropyBackwardLoops.Run(0, body, len(targets), rowGrain(V))
}

// crossEntropyBackwardBody is the loop body of crossEntropyBackward, over
// rows.
type crossEntropyBackwardBody struct {
	dlogits, probs []float32
	targets        []int32
	V              int
	acc, none      bool
	scale          float32
}

var crossEntropyBackwardLoops kernels.Chunks[crossEntropyBackwardBody, *crossEntropyBackwardBody]

func (b *crossEntropyBackwardBody) Chunk(lo, hi int) {
	dlogits, probs, targets := b.dlogits, b.probs, b.targets
	V, acc, none, scale := b.V, b.acc, b.none, b.scale
	for r := lo; r < hi; r++ {
		t := targets[r]
		dr := dlogits[r*V : r*V+V]
		if t == IgnoreIndex || none {
			if !acc {
				clear(dr)
			}
			continue
		}
		pr := probs[r*V : r*V+V]
		if acc {
			kernels.Axpy(scale, pr, dr)
		} else {
			for k, p := range pr {
				dr[k] = p * scale
			}
		}
		dr[t] -= scale
	}
}
