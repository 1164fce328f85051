//go:build !amd64 || purego

package kernels

// The assembly kernels do not exist in this build; useAVX2 is the constant
// false here, so these stand-ins only let vec.go compile and are never called.

func dotAVX2(x, y []float32) float32                      { panic(noAsm) }
func dotI8AVX2(x []float32, w []int8) float32             { panic(noAsm) }
func dequantI8AVX2(dst []float32, src []int8, s float32)  { panic(noAsm) }
func sumAVX2(x []float32) float32                         { panic(noAsm) }
func maxAVX2(x []float32) float32                         { panic(noAsm) }
func axpyAVX2(alpha float32, x, y []float32)              { panic(noAsm) }
func scaleAVX2(alpha float32, x []float32)                { panic(noAsm) }
func expAVX2(dst, src []float32)                          { panic(noAsm) }
func expSubSumAVX2(dst, src []float32, m float32) float32 { panic(noAsm) }

const noAsm = "kernels: assembly kernel called in a build without assembly"
