package nn

import "github.com/galleon-ml/galleon/internal/kernels"

// The mixed-precision products of the Linear op (LinearOpts.BF16): the
// float32 ones of linear_kernel.go with bfloat16 operands, float32
// accumulation and float32 results. w16 is the weight rounded to bfloat16,
// in the weight's layout; float32 operands are rounded by GemmBF16 as it
// packs them.

// LinearForwardBF16 computes y = x·W + b (x·Wᵀ + b with transW) for n
// rows, W [in, out] (or [out, in] with transW) in bfloat16 and b (or nil)
// float32; the arguments are not checked. The Linear op's bf16 mode and
// model's frozen BF16Linear both run it.
func LinearForwardBF16(y, x []float32, w16 []uint16, b []float32, n, in, out int, transW bool) {
	if n == 0 {
		return
	}
	var beta float32
	if b != nil {
		for r := 0; r < n; r++ {
			copy(y[r*out:r*out+out], b)
		}
		beta = 1
	}
	ld := out
	if transW {
		ld = in
	}
	kernels.GemmBF16(false, transW, n, out, in, 1, kernels.BF16Mat{F32: x, Ld: in}, kernels.BF16Mat{BF16: w16, Ld: ld}, beta, y, out)
}

// LinearBackwardXBF16 computes dx = dy·Wᵀ (dy·W with transW), the input
// gradient of LinearForwardBF16; the arguments are not checked.
func LinearBackwardXBF16(dx, dy []float32, w16 []uint16, n, in, out int, transW bool) {
	if n == 0 {
		return
	}
	ld := out
	if transW {
		ld = in
	}
	kernels.GemmBF16(false, !transW, n, in, out, 1, kernels.BF16Mat{F32: dy, Ld: out}, kernels.BF16Mat{BF16: w16, Ld: ld}, 0, dx, in)
}

// linearBackwardWBF16 computes dW = xᵀ·dy (dyᵀ·x with transW).
func linearBackwardWBF16(dw, dy, x []float32, n, in, out int, transW bool) {
	weightGradProducts.Add(1)
	if n == 0 {
		clear(dw[:in*out])
		return
	}
	xm, dym := kernels.BF16Mat{F32: x, Ld: in}, kernels.BF16Mat{F32: dy, Ld: out}
	if transW {
		kernels.GemmBF16(true, false, out, in, n, 1, dym, xm, 0, dw, in)
		return
	}
	kernels.GemmBF16(true, false, in, out, n, 1, xm, dym, 0, dw, out)
}
