//go:build amd64 && !purego

package kernels

// The AVX2+FMA micro-kernel (sgemmKernel6x16AVX2) and packing routines
// (sgemmPack*AVX2) are generated with avo; their declarations are in
// sgemm_amd64_stubs.go and their code in sgemm_amd64.s, both generated, and
// they run when sgemmAVX2 is set (the "sgemm/avx2" implementation of the
// registry, impl.go). To change them, edit _asm/sgemm/main.go and regenerate
// both files:
//
//go:generate sh -c "cd _asm && go run ./sgemm -out ../sgemm_amd64.s -stubs ../sgemm_amd64_stubs.go -pkg kernels"

// sgemmAVX2 enables the AVX2+FMA micro-kernel and packers; sgemmAVX512
// the AVX-512 micro-kernels (sgemm512.go), which run over the same packing.
var sgemmAVX2, sgemmAVX512 bool

func init() {
	Register("sgemm", "avx2", LevelAVX2, true, &sgemmAVX2)
	Register("sgemm", "avx512", LevelAVX512, true, &sgemmAVX512)
}

// sgemmAsm reports whether either assembly implementation is selected: the
// AVX-512 one packs with the AVX2 packers and shares the AVX2 path's
// thresholds, so that selecting it alone (Select, ForEach) times and tests
// it as it runs at level avx512.
func sgemmAsm() bool { return sgemmAVX2 || sgemmAVX512 }

// sgemmKernel runs the micro-kernel of the selected implementation. The
// slice expressions are the bounds checks that keep the assembly in bounds.
func sgemmKernel(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	if sgemmAVX2 {
		_ = a[kc*sgemmMR-1]
		_ = b[kc*sgemmNR-1]
		_ = c[(sgemmMR-1)*ldc+sgemmNR-1]
		sgemmKernel6x16AVX2(kc, &a[0], &b[0], &c[0], ldc, alpha, beta)
		return
	}
	sgemmKernelGo(kc, a, b, c, ldc, alpha, beta)
}

// packA6Asm packs the leading multiple of 8 of the kk steps of the six rows
// of A from row i, column p0 into the panel d with the assembly packer, and
// returns how many steps it packed (0 when the assembly is off).
func packA6Asm(d, a []float32, lda, i, p0, kk int) int {
	k8 := kk / 8
	if !sgemmAsm() || k8 == 0 {
		return 0
	}
	_ = a[(i+sgemmMR-1)*lda+p0+8*k8-1]
	_ = d[8*k8*sgemmMR-1]
	sgemmPackA6AVX2(k8, &a[i*lda+p0], lda, &d[0])
	return 8 * k8
}

// packATAsm packs the full panels of a transposed A (see packAT) for the
// leading multiple of 8 of the kk steps, and returns how many it packed.
func packATAsm(dst, a []float32, lda, i0, full, p0, kk int) int {
	kk8 := kk / 8 * 8
	if !sgemmAsm() || full == 0 || kk8 == 0 {
		return 0
	}
	_ = a[(p0+kk8-1)*lda+i0+full*sgemmMR-1]
	_ = dst[(full-1)*sgemmMR*kk+kk8*sgemmMR-1]
	sgemmPackATAVX2(kk8, full, &a[p0*lda+i0], lda, &dst[0], sgemmMR*kk)
	return kk8
}

// packBT16Asm packs a full 16-column panel of a transposed B from row j,
// column p0 for the leading multiple of 8 of the kk steps, and returns how
// many it packed.
func packBT16Asm(d, b []float32, ldb, j, p0, kk int) int {
	k8 := kk / 8
	if !sgemmAsm() || k8 == 0 {
		return 0
	}
	_ = b[(j+sgemmNR-1)*ldb+p0+8*k8-1]
	_ = d[8*k8*sgemmNR-1]
	sgemmPackBT16AVX2(k8, &b[j*ldb+p0], ldb, &d[0])
	return 8 * k8
}

// packBNAsm packs the full panels of a B that is not transposed (see packBN)
// for the leading multiple of 4 of the kk steps, and returns how many it
// packed.
func packBNAsm(dst, b []float32, ldb, j0, full, p0, kk int) int {
	kk4 := kk / 4 * 4
	if !sgemmAsm() || full == 0 || kk4 == 0 {
		return 0
	}
	_ = b[(p0+kk4-1)*ldb+j0+full*sgemmNR-1]
	_ = dst[(full-1)*sgemmNR*kk+kk4*sgemmNR-1]
	sgemmPackBNAVX2(kk4, full, &b[p0*ldb+j0], ldb, &dst[0], sgemmNR*kk)
	return kk4
}
