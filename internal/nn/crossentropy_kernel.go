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
	return crossEntropyForward(probs, logits, targets, V, count), count, nil
}

func crossEntropyForward(probs, logits []float32, targets []int32, V, count int) float32 {
	var total float64
	for r, t := range targets {
		lr := logits[r*V : r*V+V]
		pr := probs[r*V : r*V+V]
		var lt float32
		if t != IgnoreIndex {
			lt = lr[t] // before pr, which may be lr, is written
		}
		m := kernels.Max(lr)
		sum := kernels.ExpSubSum(pr, lr, m)
		kernels.Scale(1/sum, pr)
		if t != IgnoreIndex {
			total += float64(m) + math.Log(float64(sum)) - float64(lt)
		}
	}
	if count == 0 {
		return 0
	}
	return float32(total / float64(count))
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
	for r, t := range targets {
		dr := dlogits[r*V : r*V+V]
		if t == IgnoreIndex || count == 0 {
			if !acc {
				clear(dr)
			}
			continue
		}
		pr := probs[r*V : r*V+V]
		if acc {
			kernels.Axpy(scale, pr, dr)
		} else {
			for j, p := range pr {
				dr[j] = p * scale
			}
		}
		dr[t] -= scale
	}
}
