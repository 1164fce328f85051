//go:build amd64 && !purego

package kernels

// The int8 micro-kernels are generated with avo; their declarations are in
// i8gemm_amd64_stubs.go and their code in i8gemm_amd64.s. To change them, edit
// _asm/i8gemm/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./i8gemm -out ../i8gemm_amd64.s -stubs ../i8gemm_amd64_stubs.go -pkg kernels"
