//go:build amd64 && !purego

package attention

import "github.com/galleon-ml/galleon/internal/kernels"

// The 6×16 AVX2+FMA tile kernel is generated with avo, beside the other
// kernels; its declarations are in tile_amd64_stubs.go and its code in
// tile_amd64.s. To change them, edit internal/kernels/_asm/tile/main.go and
// regenerate both files:
//
//go:generate sh -c "cd ../internal/kernels/_asm && go run ./tile -out ../../../attention/tile_amd64.s -stubs ../../../attention/tile_amd64_stubs.go -pkg attention"

// tileAVX2 enables the assembly tile kernel: the "attention/avx2"
// implementation of the kernel registry.
var tileAVX2 bool

func init() { kernels.Register("attention", "avx2", kernels.LevelAVX2, true, &tileAVX2) }

// rowDotAsm is rowDot with the assembly chain, when it is enabled.
func rowDotAsm(x, y []float32, kc int) (float32, bool) {
	if !tileAVX2 {
		return 0, false
	}
	return dotChain(&x[0], &y[0], len(x), kc), true
}

// gemmAsm computes the whole 6-row blocks of gemm's C = op(A·B) (all their
// columns: the 16-column blocks in assembly, the rest in Go) and returns how
// many rows it computed: 0 when the assembly is off or C has less than one
// 6×16 block. gemm has checked the slices' bounds.
func gemmAsm(m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) int {
	m6, n16 := m/microM*microM, n/microN*microN
	if !tileAVX2 || k <= 0 || m6 == 0 || n16 == 0 {
		return 0
	}
	for i := 0; i < m6; i += microM {
		var pp, dd *float32
		if mode >= tileDS {
			pp, dd = &p[i*ldc], &dv[i]
		}
		kern6x16(n16, k, &a[i*sai], sai, sak, &b[0], ldb, &c[i*ldc], ldc, mode, pp, dd)
	}
	// Remaining columns of the whole row blocks.
	if n16 < n {
		gemmGeneric(m6, n16, n, k, a, sai, sak, b, ldb, c, ldc, mode, p, dv)
	}
	return m6
}
