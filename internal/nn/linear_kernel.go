package nn

import (
	"sync/atomic"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// weightGradProducts counts the weight-gradient GEMMs run (xᵀ·dy), so tests
// can prove that frozen weights cost none.
var weightGradProducts atomic.Int64

func checkLinear(fn string, rows, in, out int) error {
	if rows < 0 || in <= 0 || out <= 0 {
		return shapeErr(fn, "rows=%d, in=%d, out=%d: rows must be non-negative, widths positive", rows, in, out)
	}
	return nil
}

// LinearForward computes y = x·W + b for x [rows, in], W [in, out] (Hugging
// Face Conv1D layout), b [out] or nil, y [rows, out]. The product runs on
// kernels.Sgemm. y must not alias x or w.
func LinearForward(y, x, w, b []float32, rows, in, out int) error {
	return linearForwardChecked("LinearForward", y, x, w, b, rows, in, out, false)
}

// LinearForwardTransW computes y = x·Wᵀ + b for W [out, in] (the layout of
// nn.Linear in PyTorch, and of the tied output head whose weight is
// wte [V, C]); otherwise as LinearForward.
func LinearForwardTransW(y, x, w, b []float32, rows, in, out int) error {
	return linearForwardChecked("LinearForwardTransW", y, x, w, b, rows, in, out, true)
}

func linearForwardChecked(fn string, y, x, w, b []float32, rows, in, out int, transW bool) error {
	if err := checkLinear(fn, rows, in, out); err != nil {
		return err
	}
	if err := checkLen(fn, "x", len(x), rows*in); err != nil {
		return err
	}
	if err := checkLen(fn, "w", len(w), in*out); err != nil {
		return err
	}
	if err := checkLen(fn, "y", len(y), rows*out); err != nil {
		return err
	}
	if b != nil {
		if err := checkLen(fn, "b", len(b), out); err != nil {
			return err
		}
	}
	linearForward(y, x, w, b, rows, in, out, transW)
	return nil
}

func linearForward(y, x, w, b []float32, n, in, out int, transW bool) {
	if n == 0 {
		return
	}
	ldw := out
	if transW {
		ldw = in
	}
	if b != nil {
		// The product adds onto the bias, with no pass over y of its
		// own where the AVX-512 kernel starts from it (SgemmBias).
		kernels.SgemmBias(false, transW, n, out, in, x, in, w, ldw, b, y, out)
		return
	}
	kernels.Sgemm(false, transW, n, out, in, 1, x, in, w, ldw, 0, y, out)
}

// LinearBackward accumulates the gradients of LinearForward (or, with
// transW, LinearForwardTransW) given dy [rows, out]: dx += dy·Wᵀ (dy·W for
// transW), dw += xᵀ·dy ([in, out]; dyᵀ·x, [out, in], for transW), db += column
// sums of dy. Any of dx, dw, db may be nil to skip its work; x is read only
// for dw and w only for dx.
func LinearBackward(dx, dw, db, dy, x, w []float32, rows, in, out int, transW bool) error {
	const fn = "LinearBackward"
	n := rows
	if err := checkLinear(fn, rows, in, out); err != nil {
		return err
	}
	if err := checkLen(fn, "dy", len(dy), rows*out); err != nil {
		return err
	}
	if dx != nil {
		if err := checkLen(fn, "dx", len(dx), n*in); err != nil {
			return err
		}
		if err := checkLen(fn, "w", len(w), in*out); err != nil {
			return err
		}
	}
	if dw != nil {
		if err := checkLen(fn, "dw", len(dw), in*out); err != nil {
			return err
		}
		if err := checkLen(fn, "x", len(x), n*in); err != nil {
			return err
		}
	}
	if db != nil {
		if err := checkLen(fn, "db", len(db), out); err != nil {
			return err
		}
	}
	if dx != nil {
		linearBackwardX(dx, dy, w, n, in, out, transW, 1)
	}
	if dw != nil {
		linearBackwardW(dw, dy, x, n, in, out, transW, 1)
	}
	if db != nil {
		columnSums(db, dy, out)
	}
	return nil
}

// linearBackwardX computes dx = dy·Wᵀ (+ beta·dx).
func linearBackwardX(dx, dy, w []float32, n, in, out int, transW bool, beta float32) {
	if n == 0 {
		return
	}
	if transW {
		kernels.Sgemm(false, false, n, in, out, 1, dy, out, w, in, beta, dx, in)
	} else {
		kernels.Sgemm(false, true, n, in, out, 1, dy, out, w, out, beta, dx, in)
	}
}

// linearBackwardW computes dW = xᵀ·dy (+ beta·dW), or dyᵀ·x for transW.
func linearBackwardW(dw, dy, x []float32, n, in, out int, transW bool, beta float32) {
	weightGradProducts.Add(1)
	if n == 0 {
		if beta == 0 {
			clear(dw[:in*out])
		}
		return
	}
	if transW {
		kernels.Sgemm(true, false, out, in, n, 1, dy, out, x, in, beta, dw, in)
	} else {
		kernels.Sgemm(true, false, in, out, n, 1, x, in, dy, out, beta, dw, out)
	}
}
