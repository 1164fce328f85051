package nn

import (
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// The output head and the cross-entropy, fused and chunked: at B·T = 8·1024
// rows and a 128,256-token vocabulary the logits alone take 4 GiB, so these
// kernels never hold more than one chunk of rows of them. Each chunk's
// logits come from one kernels.Sgemm, become softmax gradients in place, and
// feed the dx and dW products at once, so a training step runs three
// products (logits, dx, dW) over the vocabulary and no fourth to recompute
// the logits.

// linearCEBudget is the default size of one chunk of logits, in bytes. The
// dW product adds a chunk of rows into all of dW [D, V] per chunk, and the
// logits and dx products each pack all of W, so larger chunks pass over W
// and dW fewer times: at GPT-2 124M's head (1024 rows, D 768, V 50,257)
// BenchmarkLinearCrossEntropyChunk's training pass took 2.7–2.95
// CPU-seconds in chunks of 256 rows (the earlier 64 MiB budget), 2.55–2.66
// in chunks of 512 and 2.4–2.7 in one chunk of 1024 (6–9 runs each,
// alternating, on the shared 2-core Zen 4 under heavy load). 256 MiB holds
// 1024 rows at GPT-2's and SmolLM2's vocabularies and 512 at Llama 3's,
// still 16× less than the 4 GiB of whole logits above.
const linearCEBudget = 256 << 20

// LinearCEChunk returns the default number of rows per chunk for a
// vocabulary of V: as many as fit in 256 MiB of float32 logits, a multiple
// of 16 between 16 and 1024.
func LinearCEChunk(V int) int {
	c := linearCEBudget / 4 / max(V, 1)
	return min(max(c/16*16, 16), 1024)
}

// linearCEFrozenBudget is the size of one chunk of logits for a frozen
// head (LoRA, a bf16 base), which has no dW product: the chunk size then
// only sets how many times the logits and dx products pack W, twice per
// chunk, a pass over D·V weights against the products' 2·rows·D·V
// multiply-adds per chunk, so a quarter of linearCEBudget costs little and
// saves 150 MiB at SmolLM2's vocabulary and 1,024 rows. Smaller budgets
// do cost: BenchmarkLinearCEFrozenChunk's bfloat16 head over 256 rows took
// 0.20 CPU-seconds at 64 MiB, 0.25 at 32 and 0.33 at 16, over 1,024 rows
// 0.84, 0.93 and 1.23 (one run of 3 calls each, on the shared 2-core
// machine), as each chunk packs all of W twice.
const linearCEFrozenBudget = 64 << 20

// LinearCEFrozenChunk is LinearCEChunk for a head whose weight is frozen:
// as many rows as fit in 64 MiB of logits, a multiple of 16 between 16 and
// 1024.
func LinearCEFrozenChunk(V int) int {
	c := linearCEFrozenBudget / 4 / max(V, 1)
	return min(max(c/16*16, 16), 1024)
}

// linearCECheckpointBudget is the size of one chunk of logits for a frozen
// head under gradient checkpointing, whose op drops its logits after every
// run (LinearCEOpts.Release). They are live only while the head runs, when
// the step holds the blocks' outputs and little else, and the step's peak
// is then the larger of them and one recomputed block's internals. At
// SmolLM2-135M's shapes and one sequence of 256 tokens that block takes
// 28 MiB: 48 MiB of logits (the frozen budget's 256 rows) set the peak of
// `galleon finetune -grad-checkpointing -batch 1` 20 MiB above it, 24 (128
// rows) stay below it. The smaller chunks cost 0.04–0.05 CPU-seconds per
// step there (BenchmarkLinearCEFrozenChunk), about 1% of it.
const linearCECheckpointBudget = 32 << 20

// LinearCECheckpointChunk is LinearCEFrozenChunk for a frozen head under
// gradient checkpointing, whose logits live only while it runs: as many
// rows as fit in 32 MiB of logits, a multiple of 16 between 16 and 1024.
func LinearCECheckpointChunk(V int) int {
	c := linearCECheckpointBudget / 4 / max(V, 1)
	return min(max(c/16*16, 16), 1024)
}

// LinearCEScratch is the memory of the fused linear cross-entropy kernels:
// one chunk of logits (Rows×V float32) and the chunk's row losses. Reuse one
// across calls so they allocate nothing; it is not safe for concurrent use.
type LinearCEScratch struct {
	rows, V int
	logits  []float32
	rowLoss []float64
}

// NewLinearCEScratch returns scratch for chunks of rows rows of a
// vocabulary of V (rows ≤ 0: LinearCEChunk(V)).
func NewLinearCEScratch(rows, V int) *LinearCEScratch {
	if rows <= 0 {
		rows = LinearCEChunk(V)
	}
	return &LinearCEScratch{rows: rows, V: V, logits: make([]float32, rows*max(V, 0)), rowLoss: make([]float64, rows)}
}

// Rows is the number of rows per chunk.
func (s *LinearCEScratch) Rows() int { return s.rows }

func checkLinearCE(fn string, s *LinearCEScratch, x []float32, wlen int, targets []int32, D, V int) (int, error) {
	rows := len(targets)
	if D <= 0 || V <= 0 {
		return 0, shapeErr(fn, "D=%d, V=%d must be positive", D, V)
	}
	if err := checkLen(fn, "x", len(x), rows*D); err != nil {
		return 0, err
	}
	if err := checkLen(fn, "w", wlen, D*V); err != nil {
		return 0, err
	}
	if s != nil && s.V != V {
		return 0, shapeErr(fn, "scratch for V=%d used with V=%d", s.V, V)
	}
	return checkTargets(fn, targets, V)
}

// LinearCrossEntropyForward returns the summed softmax cross-entropy of the
// logits x·W against targets, and the number of rows counted, without
// materializing more than one chunk of logits: the evaluation form (the mean
// loss is sum/count). x is [rows, D] with rows = len(targets); W is [D, V],
// or [V, D] with transW (a head tied to the embedding). Rows whose target is
// IgnoreIndex are left out of both; a target outside [0, V) is an error
// wrapping ErrRange. scratch may be nil (allocated for the call).
func LinearCrossEntropyForward(scratch *LinearCEScratch, x, w []float32, targets []int32, D, V int, transW bool) (sum float64, count int, err error) {
	return runLinearCE("LinearCrossEntropyForward", scratch, nil, nil, x, ceWeight{f32: w}, targets, D, V, transW, 0, false)
}

// LinearCrossEntropyForwardBF16 is LinearCrossEntropyForward with the
// weight held in bfloat16 (a frozen head, as a BF16 checkpoint stores it):
// the logits come from kernels.GemmBF16, which rounds x to bfloat16 as it
// packs it and accumulates in float32; softmax and the loss are float32.
func LinearCrossEntropyForwardBF16(scratch *LinearCEScratch, x []float32, w []uint16, targets []int32, D, V int, transW bool) (sum float64, count int, err error) {
	return runLinearCE("LinearCrossEntropyForwardBF16", scratch, nil, nil, x, ceWeight{b16: w}, targets, D, V, transW, 0, false)
}

// LinearCrossEntropyBackwardBF16 is LinearCrossEntropyBackward with the
// weight held in bfloat16 and frozen: it computes the loss and adds the
// gradient dx (nil to skip it) only; both products run on
// kernels.GemmBF16 (x, and the softmax gradient, rounded to bfloat16 as
// they are packed; float32 accumulation).
func LinearCrossEntropyBackwardBF16(scratch *LinearCEScratch, dx, x []float32, w []uint16, targets []int32, D, V int, transW bool, dloss float32) (sum float64, count int, err error) {
	return runLinearCE("LinearCrossEntropyBackwardBF16", scratch, dx, nil, x, ceWeight{b16: w}, targets, D, V, transW, dloss, true)
}

// LinearCrossEntropyBackward computes what LinearCrossEntropyForward does
// and, in the same pass over the chunks, accumulates the gradients of the
// mean loss (sum/count) scaled by dloss: dx += G·Wᵀ [rows, D] and dW += xᵀ·G
// ([D, V]; Gᵀ·x, [V, D], with transW), G = (softmax − onehot)·dloss/count,
// zero on ignored rows. Either of dx and dw may be nil to skip its product.
func LinearCrossEntropyBackward(scratch *LinearCEScratch, dx, dw, x, w []float32, targets []int32, D, V int, transW bool, dloss float32) (sum float64, count int, err error) {
	return runLinearCE("LinearCrossEntropyBackward", scratch, dx, dw, x, ceWeight{f32: w}, targets, D, V, transW, dloss, true)
}

// runLinearCE checks the arguments of the exported entry points, allocates
// scratch if it is nil (chunks as LinearCEFrozenChunk for a bf16, frozen
// weight, else LinearCEChunk), and runs linearCE.
func runLinearCE(fn string, scratch *LinearCEScratch, dx, dw, x []float32, w ceWeight, targets []int32, D, V int, transW bool, dloss float32, grad bool) (float64, int, error) {
	wlen := len(w.f32)
	if w.b16 != nil {
		wlen = len(w.b16)
	}
	count, err := checkLinearCE(fn, scratch, x, wlen, targets, D, V)
	if err != nil {
		return 0, 0, err
	}
	if dx != nil {
		if err := checkLen(fn, "dx", len(dx), len(x)); err != nil {
			return 0, 0, err
		}
	}
	if dw != nil {
		if err := checkLen(fn, "dw", len(dw), wlen); err != nil {
			return 0, 0, err
		}
	}
	if scratch == nil {
		rows := LinearCEChunk(V)
		if w.b16 != nil {
			rows = LinearCEFrozenChunk(V)
		}
		scratch = NewLinearCEScratch(min(rows, max(len(targets), 1)), V)
	}
	return linearCE(scratch, dx, dw, x, w, targets, D, V, transW, count, dloss, grad), count, nil
}

// ceWeight is the head's weight, [D, V] or with transW [V, D]: float32 in
// f32, or bfloat16 in b16 (frozen: no dW).
type ceWeight struct {
	f32 []float32
	b16 []uint16
}

// logits computes L = xc·W for c rows.
func (w ceWeight) logits(L, xc []float32, c, D, V int, transW bool) {
	ld := V
	if transW {
		ld = D
	}
	if w.b16 != nil {
		kernels.GemmBF16(false, transW, c, V, D, 1, kernels.BF16Mat{F32: xc, Ld: D}, kernels.BF16Mat{BF16: w.b16, Ld: ld}, 0, L, V)
		return
	}
	kernels.Sgemm(false, transW, c, V, D, 1, xc, D, w.f32, ld, 0, L, V)
}

// backX adds G·Wᵀ (G = L, c rows) into dxc.
func (w ceWeight) backX(dxc, L []float32, c, D, V int, transW bool) {
	ld := V
	if transW {
		ld = D
	}
	if w.b16 != nil {
		kernels.GemmBF16(false, !transW, c, D, V, 1, kernels.BF16Mat{F32: L, Ld: V}, kernels.BF16Mat{BF16: w.b16, Ld: ld}, 1, dxc, D)
		return
	}
	kernels.Sgemm(false, !transW, c, D, V, 1, L, V, w.f32, ld, 1, dxc, D)
}

// equalChunk returns the rows per chunk when rows are split into chunks of
// equal size, at most chunk each: 1024 rows in chunks of 336 would leave a
// last chunk of 16, whose products run far below speed, so they run as 4
// chunks of 256 (and the ops size their scratch for 256).
func equalChunk(rows, chunk int) int {
	n := (rows + chunk - 1) / max(chunk, 1)
	return (rows + max(n, 1) - 1) / max(n, 1)
}

// linearCE runs the chunks; with grad it adds the gradients into dx and dw
// (either may be nil; dw only with a float32 weight).
func linearCE(s *LinearCEScratch, dx, dw, x []float32, w ceWeight, targets []int32, D, V int, transW bool, count int, dloss float32, grad bool) float64 {
	var scale float32
	if grad && count > 0 {
		scale = dloss / float32(count)
	}
	rows := len(targets)
	size := equalChunk(rows, s.rows)
	var total float64
	for r0 := 0; r0 < rows; r0 += size {
		c := min(size, rows-r0)
		L := s.logits[:c*V]
		xc := x[r0*D : (r0+c)*D]
		w.logits(L, xc, c, D, V, transW)
		linearCELoops.Run(0, linearCEBody{L, targets[r0 : r0+c], s.rowLoss, V, grad, scale}, c, rowGrain(V))
		for _, l := range s.rowLoss[:c] {
			total += l
		}
		if !grad {
			continue
		}
		// L now holds G for the chunk.
		if dx != nil {
			w.backX(dx[r0*D:(r0+c)*D], L, c, D, V, transW)
		}
		if dw != nil {
			weightGradProducts.Add(1)
			if transW {
				kernels.Sgemm(true, false, V, D, c, 1, L, V, xc, D, 1, dw, D)
			} else {
				kernels.Sgemm(true, false, D, V, c, 1, xc, D, L, V, 1, dw, V)
			}
		}
	}
	return total
}

// linearCEBody is the loop body of one chunk's loss, over rows: it turns
// each row of logits L into its loss (in rowLoss) and, with grad, into
// (softmax − onehot)·scale in place (zeros when ignored).
type linearCEBody struct {
	L       []float32
	targets []int32
	rowLoss []float64
	V       int
	grad    bool
	scale   float32
}

var linearCELoops kernels.Chunks[linearCEBody, *linearCEBody]

func (b *linearCEBody) Chunk(lo, hi int) {
	L, targets, rowLoss := b.L, b.targets, b.rowLoss
	V, grad, scale := b.V, b.grad, b.scale
	for r := lo; r < hi; r++ {
		lr := L[r*V : r*V+V]
		t := targets[r]
		if t == IgnoreIndex {
			rowLoss[r] = 0
			if grad {
				clear(lr)
			}
			continue
		}
		lt := lr[t]
		m := kernels.Max(lr)
		sum := kernels.ExpSubSum(lr, lr, m)
		rowLoss[r] = float64(m) + math.Log(float64(sum)) - float64(lt)
		if grad {
			kernels.Scale(scale/sum, lr)
			lr[t] -= scale
		}
	}
}
