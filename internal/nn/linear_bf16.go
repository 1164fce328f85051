package nn

import "github.com/galleon-ml/galleon/internal/kernels"

// The mixed-precision products of the Linear op (LinearOpts.BF16): the
// float32 ones of linear_kernel.go with bfloat16 operands, float32
// accumulation and float32 results. Float32 operands, the master weight
// among them, are rounded to bfloat16 by GemmBF16 as it packs them, so no
// product makes a bf16 copy of its weight first.

// LinearForwardBF16 computes y = x·W + b (x·Wᵀ + b with transW) for n
// rows, W [in, out] (or [out, in] with transW) in bfloat16 and b (or nil)
// float32; the arguments are not checked. Model's frozen BF16Linear runs
// it.
func LinearForwardBF16(y, x []float32, w16 []uint16, b []float32, n, in, out int, transW bool) {
	linearForwardBF16(y, x, kernels.BF16Mat{BF16: w16}, b, n, in, out, transW)
}

// linearForwardBF16 is LinearForwardBF16 with W in bfloat16 or float32
// (w.Ld is set here).
func linearForwardBF16(y, x []float32, w kernels.BF16Mat, b []float32, n, in, out int, transW bool) {
	if n == 0 {
		return
	}
	w.Ld = out
	if transW {
		w.Ld = in
	}
	xm := kernels.BF16Mat{F32: x, Ld: in}
	if b != nil {
		// The product adds onto the bias tile by tile, without a pass
		// of its own over y.
		kernels.GemmBF16Bias(false, transW, n, out, in, xm, w, b, y, out)
		return
	}
	kernels.GemmBF16(false, transW, n, out, in, 1, xm, w, 0, y, out)
}

// LinearBackwardXBF16 computes dx = dy·Wᵀ (dy·W with transW), the input
// gradient of LinearForwardBF16; the arguments are not checked.
func LinearBackwardXBF16(dx, dy []float32, w16 []uint16, n, in, out int, transW bool) {
	linearBackwardXBF16(dx, dy, kernels.BF16Mat{BF16: w16}, n, in, out, transW)
}

// linearBackwardXBF16 is LinearBackwardXBF16 with W in bfloat16 or
// float32 (w.Ld is set here).
func linearBackwardXBF16(dx, dy []float32, w kernels.BF16Mat, n, in, out int, transW bool) {
	if n == 0 {
		return
	}
	w.Ld = out
	if transW {
		w.Ld = in
	}
	kernels.GemmBF16(false, !transW, n, in, out, 1, kernels.BF16Mat{F32: dy, Ld: out}, w, 0, dx, in)
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
