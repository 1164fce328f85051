package nn

import (
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// RMSNormForward normalizes each row of x [N, C] by its root mean square and
// scales it: y = x·rstd·w with rstd = 1/√(mean(x²) + eps), the RMSNorm of
// the Llama family (Hugging Face's LlamaRMSNorm, computed in float32 as it
// is). rstd [N] receives each row's rstd for RMSNormBackward; pass nil when
// no backward follows. y may alias x.
func RMSNormForward(y, rstd, x, w []float32, C int, eps float32) error {
	const fn = "RMSNormForward"
	n, err := rowsOf(fn, "x", len(x), C)
	if err != nil {
		return err
	}
	if err := checkLen(fn, "y", len(y), n*C); err != nil {
		return err
	}
	if err := checkLen(fn, "w", len(w), C); err != nil {
		return err
	}
	if rstd != nil {
		if err := checkLen(fn, "rstd", len(rstd), n); err != nil {
			return err
		}
	}
	if !(eps >= 0) || math.IsInf(float64(eps), 0) {
		return shapeErr(fn, "eps=%g must be finite and non-negative", eps)
	}
	rmsNormForward(y, rstd, x, w, C, eps)
	return nil
}

func rmsNormForward(y, rstd, x, w []float32, C int, eps float32) {
	rmsNormForwardLoops.Run(0, rmsNormForwardBody{y, rstd, x, w, C, eps}, len(x)/C, rowGrain(C))
}

// rmsNormForwardBody is the loop body of rmsNormForward, over rows.
type rmsNormForwardBody struct {
	y, rstd, x, w []float32
	C             int
	eps           float32
}

var rmsNormForwardLoops kernels.Chunks[rmsNormForwardBody, *rmsNormForwardBody]

// sumSquares is Σ v², four partial sums so the adds do not wait on one
// another.
func sumSquares(x []float32) float32 {
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= len(x); k += 4 {
		s0 += x[k] * x[k]
		s1 += x[k+1] * x[k+1]
		s2 += x[k+2] * x[k+2]
		s3 += x[k+3] * x[k+3]
	}
	for ; k < len(x); k++ {
		s0 += x[k] * x[k]
	}
	return (s0 + s1) + (s2 + s3)
}

func (b *rmsNormForwardBody) Chunk(lo, hi int) {
	y, rstd, x, w := b.y, b.rstd, b.x, b.w
	C, eps := b.C, b.eps
	w = w[:C]
	for r := lo; r < hi; r++ {
		xr := x[r*C : r*C+C]
		yr := y[r*C : r*C+C]
		ms := sumSquares(xr) / float32(C)
		rs := float32(1 / math.Sqrt(float64(ms)+float64(eps)))
		if rstd != nil {
			rstd[r] = rs
		}
		for k, v := range xr {
			yr[k] = v * rs * w[k]
		}
	}
}

// RMSNormBackward accumulates the gradients of RMSNormForward given dy
// [N, C] and the rstd it saved: with x̂ = x·rstd and ĝ = dy·w,
// dx += rstd·(ĝ − x̂·mean(ĝ·x̂)) and dw += Σ_rows dy·x̂. Either of dx and dw
// may be nil to skip it.
func RMSNormBackward(dx, dw, dy, x, w, rstd []float32, C int) error {
	const fn = "RMSNormBackward"
	n, err := rowsOf(fn, "x", len(x), C)
	if err != nil {
		return err
	}
	if err := checkLen(fn, "dy", len(dy), n*C); err != nil {
		return err
	}
	if err := checkLen(fn, "rstd", len(rstd), n); err != nil {
		return err
	}
	if dx != nil {
		if err := checkLen(fn, "dx", len(dx), n*C); err != nil {
			return err
		}
		if err := checkLen(fn, "w", len(w), C); err != nil {
			return err
		}
		rmsNormBackwardX(dx, dy, x, w, rstd, C, true)
	}
	if dw != nil {
		if err := checkLen(fn, "dw", len(dw), C); err != nil {
			return err
		}
		rmsNormBackwardW(dw, dy, x, rstd, C)
	}
	return nil
}

// rmsNormBackwardX writes (acc false) or adds (acc true) dx.
func rmsNormBackwardX(dx, dy, x, w, rstd []float32, C int, acc bool) {
	rmsNormBackwardXLoops.Run(0, rmsNormBackwardXBody{dx, dy, x, w, rstd, C, acc}, len(x)/C, rowGrain(C))
}

// rmsNormBackwardXBody is the loop body of rmsNormBackwardX, over rows.
type rmsNormBackwardXBody struct {
	dx, dy, x, w, rstd []float32
	C                  int
	acc                bool
}

var rmsNormBackwardXLoops kernels.Chunks[rmsNormBackwardXBody, *rmsNormBackwardXBody]

func (bd *rmsNormBackwardXBody) Chunk(lo, hi int) {
	dx, dy, x, w, rstd := bd.dx, bd.dy, bd.x, bd.w, bd.rstd
	C, acc := bd.C, bd.acc
	w = w[:C]
	for r := lo; r < hi; r++ {
		xr := x[r*C : r*C+C]
		dyr := dy[r*C : r*C+C]
		dxr := dx[r*C : r*C+C]
		rs := rstd[r]
		var s0, s1, s2, s3 float32 // Σ ĝ·x
		k := 0
		for ; k+4 <= C; k += 4 {
			s0 += dyr[k] * w[k] * xr[k]
			s1 += dyr[k+1] * w[k+1] * xr[k+1]
			s2 += dyr[k+2] * w[k+2] * xr[k+2]
			s3 += dyr[k+3] * w[k+3] * xr[k+3]
		}
		for ; k < C; k++ {
			s0 += dyr[k] * w[k] * xr[k]
		}
		// dx = rs·ĝ − rs³·x·mean(ĝ·x)
		b := -rs * rs * rs * ((s0 + s1) + (s2 + s3)) / float32(C)
		if acc {
			for k, v := range xr {
				dxr[k] += rs*dyr[k]*w[k] + b*v
			}
		} else {
			for k, v := range xr {
				dxr[k] = rs*dyr[k]*w[k] + b*v
			}
		}
	}
}

// rmsNormBackwardW adds Σ_rows dy·x·rstd into dw, split by columns so that
// each column adds its rows in order.
func rmsNormBackwardW(dw, dy, x, rstd []float32, C int) {
	rmsNormBackwardWLoops.Run(0, rmsNormBackwardWBody{dw, dy, x, rstd, C}, C, colGrain(C, len(x)/C))
}

// rmsNormBackwardWBody is the loop body of rmsNormBackwardW, over columns.
type rmsNormBackwardWBody struct {
	dw, dy, x, rstd []float32
	C               int
}

var rmsNormBackwardWLoops kernels.Chunks[rmsNormBackwardWBody, *rmsNormBackwardWBody]

func (b *rmsNormBackwardWBody) Chunk(lo, hi int) {
	dw, dy, x, rstd := b.dw[lo:hi], b.dy, b.x, b.rstd
	C := b.C
	for r := 0; r < len(x)/C; r++ {
		xr := x[r*C+lo : r*C+hi]
		dyr := dy[r*C+lo : r*C+hi]
		rs := rstd[r]
		for k, v := range xr {
			dw[k] += dyr[k] * v * rs
		}
	}
}
