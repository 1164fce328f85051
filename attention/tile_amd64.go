//go:build amd64 && !purego

package attention

import "github.com/galleon-ml/galleon/internal/kernels"

// The 6×16 AVX2+FMA and 6×32 AVX-512 tile kernels are generated with avo,
// beside the other kernels; their declarations are in tile_amd64_stubs.go
// and their code in tile_amd64.s. To change them, edit
// internal/kernels/_asm/tile/main.go and regenerate both files:
//
//go:generate sh -c "cd ../internal/kernels/_asm && go run ./tile -out ../../../attention/tile_amd64.s -stubs ../../../attention/tile_amd64_stubs.go -pkg attention"

// tileAVX2 and tileAVX512 enable the assembly tile kernels: the
// "attention/avx2" and "attention/avx512" implementations of the kernel
// registry. The AVX-512 one computes whole 32-column blocks with kern6x32
// and the rest as the AVX2 one does (kern6x16 and dotChain need only AVX2).
var tileAVX2, tileAVX512 bool

func init() {
	kernels.Register("attention", "avx2", kernels.LevelAVX2, true, &tileAVX2)
	kernels.Register("attention", "avx512", kernels.LevelAVX512, true, &tileAVX512)
}

// rowDotAsm is rowDot with the assembly chain, when it is enabled.
func rowDotAsm(x, y []float32, kc int) (float32, bool) {
	if !tileAVX2 && !tileAVX512 {
		return 0, false
	}
	return dotChain(&x[0], &y[0], len(x), kc), true
}

// rowDot8Asm is rowDot8 with the assembly chains, when they are enabled.
// rowDot8 has checked the bounds.
func rowDot8Asm(x []float32, sx int, y []float32, sy, n, kc int, out *[8]float32) bool {
	if !tileAVX2 && !tileAVX512 {
		return false
	}
	dotChain8(&x[0], sx, &y[0], sy, n, kc, out)
	return true
}

// gemmAsm computes the whole 6-row blocks of gemm's C = op(A·B) (all their
// columns: the 16-column blocks in assembly, the rest in Go) and returns how
// many rows it computed: 0 when the assembly is off or C has less than one
// 6×16 block. gemm has checked the slices' bounds.
func gemmAsm(m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) int {
	m6, n16 := m/microM*microM, n/microN*microN
	if !tileAVX2 && !tileAVX512 || k <= 0 || m6 == 0 || n16 == 0 {
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

// gemmWideAsm computes the whole 6×32 blocks of gemmChunked's C (mode
// tileSet, tileAdd or tileDS; k in chunks of kc) with kern6x32 and returns
// how many rows and columns it covered: zeros when the AVX-512 kernel is
// off or C has no whole block. gemmChunked has checked the bounds.
func gemmWideAsm(kc, m, n, k int, a []float32, sai, sak int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) (m6, n32 int) {
	m6, n32 = m/microM*microM, n/(2*microN)*(2*microN)
	if !tileAVX512 || k <= 0 || m6 == 0 || n32 == 0 {
		return 0, 0
	}
	for i := 0; i < m6; i += microM {
		var pp, dd *float32
		if mode >= tileDS {
			pp, dd = &p[i*ldc], &dv[i]
		}
		kern6x32(n32, k, kc, &a[i*sai], sai, sak, &b[0], ldb, &c[i*ldc], ldc, mode, pp, dd)
	}
	return m6, n32
}

// scaleRowsAsm computes scaleRowsTo's whole 8-column groups and returns
// how many columns it covered: 0 when the assembly is off.
// scaleRowsTo has checked the bounds.
func scaleRowsAsm(dst []float32, ldd int, src []float32, lds, rows, d int, s []float32, ss int) int {
	if !tileAVX2 && !tileAVX512 || d < 8 {
		return 0
	}
	scaleRows(&dst[0], ldd, &src[0], lds, rows, d/8, &s[0], ss)
	return d / 8 * 8
}

// transposeAsm computes transposeRows's whole 8×8 blocks and returns how
// many rows and columns of src it covered: zeros when the assembly is off.
// transposeRows has checked the bounds.
func transposeAsm(dst []float32, ldd int, src []float32, lds, n, d int, s float32) (n8, d8 int) {
	if !tileAVX2 && !tileAVX512 || n < 8 || d < 8 {
		return 0, 0
	}
	transpose8(&dst[0], ldd, &src[0], lds, n/8, d/8, s)
	return n / 8 * 8, d / 8 * 8
}
