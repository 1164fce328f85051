package nn

import (
	"math"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// DefaultEps is GPT-2's LayerNorm epsilon.
const DefaultEps = 1e-5

// LayerNormForward normalizes each row of x [N, C] over its C features and
// applies the affine map: y = (x − μ)·rstd·gamma + beta with
// rstd = 1/√(σ² + eps), σ² the biased variance (as PyTorch). mean and rstd
// [N] receive μ and rstd per row for the backward pass; pass nil for both
// when no backward will follow. y may alias x.
func LayerNormForward(y, mean, rstd, x, gamma, beta []float32, C int, eps float32) error {
	const fn = "LayerNormForward"
	n, err := rowsOf(fn, "x", len(x), C)
	if err != nil {
		return err
	}
	if err := checkLayerNorm(fn, n, C, len(y), len(gamma), len(beta)); err != nil {
		return err
	}
	if (mean == nil) != (rstd == nil) {
		return shapeErr(fn, "mean and rstd must both be given or both be nil")
	}
	if mean != nil {
		if err := checkLen(fn, "mean", len(mean), n); err != nil {
			return err
		}
		if err := checkLen(fn, "rstd", len(rstd), n); err != nil {
			return err
		}
	}
	if !(eps >= 0) {
		return shapeErr(fn, "eps=%g must be non-negative", eps)
	}
	layerNormForward(y, mean, rstd, x, gamma, beta, C, eps)
	return nil
}

func checkLayerNorm(fn string, n, C, ny, ngamma, nbeta int) error {
	if err := checkLen(fn, "y", ny, n*C); err != nil {
		return err
	}
	if err := checkLen(fn, "gamma", ngamma, C); err != nil {
		return err
	}
	return checkLen(fn, "beta", nbeta, C)
}

func layerNormForward(y, mean, rstd, x, gamma, beta []float32, C int, eps float32) {
	layerNormForwardLoops.Run(0, layerNormForwardBody{y, mean, rstd, x, gamma, beta, C, eps}, len(x)/C, rowGrain(C))
}

// layerNormForwardBody is the loop body of layerNormForward, over rows.
type layerNormForwardBody struct {
	y, mean, rstd, x, gamma, beta []float32
	C                             int
	eps                           float32
}

var layerNormForwardLoops kernels.Chunks[layerNormForwardBody, *layerNormForwardBody]

func (bd *layerNormForwardBody) Chunk(lo, hi int) {
	y, mean, rstd, x, gamma, beta := bd.y, bd.mean, bd.rstd, bd.x, bd.gamma, bd.beta
	C, eps := bd.C, bd.eps
	invC := 1 / float32(C)
	gamma, beta = gamma[:C], beta[:C]
	for r := lo; r < hi; r++ {
		xr := x[r*C : r*C+C]
		yr := y[r*C : r*C+C]
		mu := kernels.Sum(xr) * invC
		// Two passes: the variance of shifted data does not cancel
		// catastrophically when |μ| ≫ σ, as E[x²] − μ² would.
		var v0, v1, v2, v3 float32
		k := 0
		for ; k+4 <= C; k += 4 {
			d0, d1, d2, d3 := xr[k]-mu, xr[k+1]-mu, xr[k+2]-mu, xr[k+3]-mu
			v0 += d0 * d0
			v1 += d1 * d1
			v2 += d2 * d2
			v3 += d3 * d3
		}
		for ; k < C; k++ {
			d := xr[k] - mu
			v0 += d * d
		}
		variance := ((v0 + v1) + (v2 + v3)) * invC
		rs := float32(1 / math.Sqrt(float64(variance)+float64(eps)))
		if mean != nil {
			mean[r] = mu
			rstd[r] = rs
		}
		for k, v := range xr {
			yr[k] = (v-mu)*rs*gamma[k] + beta[k]
		}
	}
}

// LayerNormBackward accumulates the gradients of LayerNormForward given dy
// [N, C] and the mean and rstd it saved: dx += rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))
// with x̂ = (x − μ)·rstd and ĝ = dy·gamma; dgamma += Σ_rows dy·x̂;
// dbeta += Σ_rows dy. Any of dx, dgamma, dbeta may be nil to skip it.
func LayerNormBackward(dx, dgamma, dbeta, dy, x, gamma, mean, rstd []float32, C int) error {
	const fn = "LayerNormBackward"
	n, err := rowsOf(fn, "x", len(x), C)
	if err != nil {
		return err
	}
	if err := checkLen(fn, "dy", len(dy), n*C); err != nil {
		return err
	}
	if err := checkLen(fn, "mean", len(mean), n); err != nil {
		return err
	}
	if err := checkLen(fn, "rstd", len(rstd), n); err != nil {
		return err
	}
	if dx != nil {
		if err := checkLen(fn, "dx", len(dx), n*C); err != nil {
			return err
		}
		if err := checkLen(fn, "gamma", len(gamma), C); err != nil {
			return err
		}
	}
	if dgamma != nil {
		if err := checkLen(fn, "dgamma", len(dgamma), C); err != nil {
			return err
		}
	}
	if dbeta != nil {
		if err := checkLen(fn, "dbeta", len(dbeta), C); err != nil {
			return err
		}
	}
	if dx != nil {
		layerNormBackwardX(dx, dy, x, gamma, mean, rstd, C, true)
	}
	if dgamma != nil {
		layerNormBackwardGamma(dgamma, dy, x, mean, rstd, C)
	}
	if dbeta != nil {
		columnSums(dbeta, dy, C)
	}
	return nil
}

// layerNormBackwardX writes (acc false) or adds (acc true) dx.
func layerNormBackwardX(dx, dy, x, gamma, mean, rstd []float32, C int, acc bool) {
	layerNormBackwardXLoops.Run(0, layerNormBackwardXBody{dx, dy, x, gamma, mean, rstd, C, acc}, len(x)/C, rowGrain(C))
}

// layerNormBackwardXBody is the loop body of layerNormBackwardX, over rows.
type layerNormBackwardXBody struct {
	dx, dy, x, gamma, mean, rstd []float32
	C                            int
	acc                          bool
}

var layerNormBackwardXLoops kernels.Chunks[layerNormBackwardXBody, *layerNormBackwardXBody]

func (bd *layerNormBackwardXBody) Chunk(lo, hi int) {
	dx, dy, x, gamma, mean, rstd := bd.dx, bd.dy, bd.x, bd.gamma, bd.mean, bd.rstd
	C, acc := bd.C, bd.acc
	invC := 1 / float32(C)
	gamma = gamma[:C]
	for r := lo; r < hi; r++ {
		xr := x[r*C : r*C+C]
		dyr := dy[r*C : r*C+C]
		dxr := dx[r*C : r*C+C]
		mu, rs := mean[r], rstd[r]
		// Σ ĝ and Σ ĝ·(x − μ), four partial sums each so the adds do not wait
		// on one another.
		var sg0, sg1, sg2, sg3, sx0, sx1, sx2, sx3 float32
		k := 0
		for ; k+4 <= C; k += 4 {
			g0, g1, g2, g3 := dyr[k]*gamma[k], dyr[k+1]*gamma[k+1], dyr[k+2]*gamma[k+2], dyr[k+3]*gamma[k+3]
			sg0 += g0
			sg1 += g1
			sg2 += g2
			sg3 += g3
			sx0 += g0 * (xr[k] - mu)
			sx1 += g1 * (xr[k+1] - mu)
			sx2 += g2 * (xr[k+2] - mu)
			sx3 += g3 * (xr[k+3] - mu)
		}
		for ; k < C; k++ {
			g := dyr[k] * gamma[k]
			sg0 += g
			sx0 += g * (xr[k] - mu)
		}
		mg := ((sg0 + sg1) + (sg2 + sg3)) * invC
		mgx := ((sx0 + sx1) + (sx2 + sx3)) * rs * invC
		// dx = rs·(ĝ − mean ĝ − x̂·mean(ĝ·x̂)) = a·ĝ + b·(x − μ) + c; x − μ
		// rather than x keeps precision when |μ| ≫ σ.
		a, b, c := rs, -rs*rs*mgx, -rs*mg
		if acc {
			for k, v := range xr {
				dxr[k] += a*dyr[k]*gamma[k] + b*(v-mu) + c
			}
		} else {
			for k, v := range xr {
				dxr[k] = a*dyr[k]*gamma[k] + b*(v-mu) + c
			}
		}
	}
}

// layerNormBackwardGamma adds Σ_rows dy·x̂ into dgamma. The sum over rows is
// split by columns so that each column adds its rows in order.
func layerNormBackwardGamma(dgamma, dy, x, mean, rstd []float32, C int) {
	layerNormBackwardGammaLoops.Run(0, layerNormBackwardGammaBody{dgamma, dy, x, mean, rstd, C}, C, colGrain(C, len(x)/C))
}

// layerNormBackwardGammaBody is the loop body of layerNormBackwardGamma,
// over columns.
type layerNormBackwardGammaBody struct {
	dgamma, dy, x, mean, rstd []float32
	C                         int
}

var layerNormBackwardGammaLoops kernels.Chunks[layerNormBackwardGammaBody, *layerNormBackwardGammaBody]

func (bd *layerNormBackwardGammaBody) Chunk(lo, hi int) {
	dgamma, dy, x, mean, rstd := bd.dgamma[lo:hi], bd.dy, bd.x, bd.mean, bd.rstd
	C := bd.C
	for r := 0; r < len(x)/C; r++ {
		xr := x[r*C+lo : r*C+hi]
		dyr := dy[r*C+lo : r*C+hi]
		kernels.AccCentered(dgamma, dyr, xr, mean[r], rstd[r])
	}
}

// columnSums adds the column sums of m [N, C] into s [C], rows in order.
func columnSums(s, m []float32, C int) {
	columnSumsLoops.Run(0, columnSumsBody{s, m, C}, C, colGrain(C, len(m)/C))
}

// columnSumsBody is the loop body of columnSums, over columns.
type columnSumsBody struct {
	s, m []float32
	C    int
}

var columnSumsLoops kernels.Chunks[columnSumsBody, *columnSumsBody]

func (bd *columnSumsBody) Chunk(lo, hi int) {
	kernels.AddRows(bd.s[lo:hi], bd.m[lo:], len(bd.m)/bd.C, bd.C)
}
