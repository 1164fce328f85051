//go:build amd64 && !purego

package attention

import "golang.org/x/sys/cpu"

// hasAsm reports whether this CPU runs the AVX2/FMA tile kernel.
var hasAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// kern6x16 computes rows [0, 6) and columns [0, n) of C = op(A·B) (see
// tile.go): n is a positive multiple of 16, k is positive, a, c (and p, dv in
// tileDS mode) point at the block's first row.
//
//go:noescape
func kern6x16(n, k int, a *float32, sai, sak int, b *float32, ldb int, c *float32, ldc int, mode int, p, dv *float32)

// dotChain returns Σ x[i]·y[i] for i < n, rounded exactly as kern6x16
// rounds one element of a product over k = n split into chunks of kc.
//
//go:noescape
func dotChain(x, y *float32, n, kc int) float32
