//go:build amd64 && !purego

package kernels

import "math"

// vecAVX2 enables the AVX2+FMA vector routines (vec_amd64.s, generated from
// _asm/vec).
var vecAVX2 bool

func init() { Register("vec", "avx2", LevelAVX2, true, &vecAVX2) }

func dot(x, y []float32) float32 {
	if vecAVX2 {
		return dotAVX2(x, y)
	}
	return dotGeneric(x, y)
}

func dotI8(x []float32, w []int8) float32 {
	if vecAVX2 {
		n := len(x) &^ 7
		s := dotI8AVX2(x, w)
		for i := n; i < len(x); i++ {
			s += x[i] * float32(w[i])
		}
		return s
	}
	return dotI8Generic(x, w)
}

func dequantI8(dst []float32, src []int8, s float32) {
	if vecAVX2 {
		n := len(src) &^ 7
		dequantI8AVX2(dst, src, s)
		dequantI8Generic(dst[n:], src[n:], s)
		return
	}
	dequantI8Generic(dst, src, s)
}

func axpy(alpha float32, x, y []float32) {
	if vecAVX2 {
		axpyAVX2(alpha, x, y)
		return
	}
	axpyGeneric(alpha, x, y)
}

// addRows sums strips of 64 columns in registers (colSums64AVX2), the
// rest row by row.
func addRows(s, m []float32, rows, ld int) {
	j := 0
	if vecAVX2 {
		for ; j+64 <= len(s); j += 64 {
			_ = m[(rows-1)*ld+j+63]
			colSums64AVX2(&s[j], &m[j], rows, ld)
		}
	}
	addRowsGeneric(s[j:], m[j:], rows, ld)
}

func scale(alpha float32, x []float32) {
	if vecAVX2 {
		scaleAVX2(alpha, x)
		return
	}
	scaleGeneric(alpha, x)
}

func maxVec(x []float32) float32 {
	if vecAVX2 {
		return maxOrNaN(x, maxAVX2(x))
	}
	return maxGeneric(x)
}

func sum(x []float32) float32 {
	if vecAVX2 {
		return sumAVX2(x)
	}
	return sumGeneric(x)
}

func exp(dst, src []float32) {
	if vecAVX2 {
		expAVX2(dst, src)
		return
	}
	expGeneric(dst, src)
}

func expSubSum(dst, src []float32, m float32) float32 {
	// m = -Inf (a fully masked row) needs the -Inf − (-Inf) case that the
	// vector loop leaves out.
	if vecAVX2 && m != float32(math.Inf(-1)) {
		return expSubSumAVX2(dst, src, m)
	}
	return expSubSumGeneric(dst, src, m)
}

func adamw(p, g, m, v []float32, k *AdamWParams) {
	if vecAVX2 {
		adamwAVX2(p, g, m, v, &k.GradScale)
		return
	}
	adamwGeneric(p, g, m, v, k)
}
