//go:build amd64 && !purego

package kernels

// The AVX2+FMA micro-kernel (sgemmKernel6x16AVX2) and packing routines
// (sgemmPack*AVX2) are generated with avo; their declarations are in
// sgemm_amd64_stubs.go and their code in sgemm_amd64.s, both generated, and
// they run when useAVX2 is set (dispatch_amd64.go). To change them, edit
// _asm/sgemm/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./sgemm -out ../sgemm_amd64.s -stubs ../sgemm_amd64_stubs.go -pkg kernels"
