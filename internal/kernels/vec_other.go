//go:build !amd64 || purego

package kernels

// Without assembly every vector routine is the portable one.

// vecAVX2 is false: there is no assembly to enable.
const vecAVX2 = false

func dot(x, y []float32) float32                     { return dotGeneric(x, y) }
func dotI8(x []float32, w []int8) float32            { return dotI8Generic(x, w) }
func dequantI8(dst []float32, src []int8, s float32) { dequantI8Generic(dst, src, s) }
func axpy(alpha float32, x, y []float32)             { axpyGeneric(alpha, x, y) }
func scale(alpha float32, x []float32)               { scaleGeneric(alpha, x) }
func addRows(s, m []float32, rows, ld int)           { addRowsGeneric(s, m, rows, ld) }
func maxVec(x []float32) float32                     { return maxGeneric(x) }
func sum(x []float32) float32                        { return sumGeneric(x) }
func exp(dst, src []float32)                         { expGeneric(dst, src) }
func expSubSum(dst, src []float32, m float32) float32 {
	return expSubSumGeneric(dst, src, m)
}

func adamw(p, g, m, v []float32, k *AdamWParams) { adamwGeneric(p, g, m, v, k) }
