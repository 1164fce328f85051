//go:build amd64 && !purego

package kernels

// The micro-kernel sgemmKernel6x16AVX2 is generated with avo; its declaration
// is in sgemm_amd64_stubs.go and its code in sgemm_amd64.s. To change it, edit
// _asm/sgemm/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./sgemm -out ../sgemm_amd64.s -stubs ../sgemm_amd64_stubs.go -pkg kernels"
