package nn

import (
	"math"
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
	j := newJob(rmsNormForwardRows)
	j.f[0], j.f[1], j.f[2], j.f[3] = y, rstd, x, w
	j.i[0], j.x = C, eps
	j.run(len(x)/C, rowGrain(C))
}

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

func rmsNormForwardRows(j *parJob, lo, hi int) {
	y, rstd, x, w := j.f[0], j.f[1], j.f[2], j.f[3]
	C, eps := j.i[0], j.x
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
	j := newJob(rmsNormBackwardXRows)
	j.f[0], j.f[1], j.f[2], j.f[3], j.f[4] = dx, dy, x, w, rstd
	j.i[0], j.i[1] = C, 0
	if acc {
		j.i[1] = 1
	}
	j.run(len(x)/C, rowGrain(C))
}

func rmsNormBackwardXRows(j *parJob, lo, hi int) {
	dx, dy, x, w, rstd := j.f[0], j.f[1], j.f[2], j.f[3], j.f[4]
	C, acc := j.i[0], j.i[1] == 1
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
	j := newJob(rmsNormBackwardWCols)
	j.f[0], j.f[1], j.f[2], j.f[3] = dw, dy, x, rstd
	j.i[0] = C
	j.run(C, colGrain(len(x)/C))
}

func rmsNormBackwardWCols(j *parJob, lo, hi int) {
	dw, dy, x, rstd := j.f[0][lo:hi], j.f[1], j.f[2], j.f[3]
	C := j.i[0]
	for r := 0; r < len(x)/C; r++ {
		xr := x[r*C+lo : r*C+hi]
		dyr := dy[r*C+lo : r*C+hi]
		rs := rstd[r]
		for k, v := range xr {
			dw[k] += dyr[k] * v * rs
		}
	}
}
