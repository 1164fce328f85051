// Command sgemm512 generates the AVX-512 micro-kernels of the float32 GEMM
// in internal/kernels (sgemm512_amd64.s, and their Go declarations in
// sgemm512_amd64_stubs.go):
//
//	cd internal/kernels/_asm && go run ./sgemm512 -out ../sgemm512_amd64.s -stubs ../sgemm512_amd64_stubs.go -pkg kernels
//
// The kernels read the operands the AVX2 path packs (internal/kernels/
// sgemm_pack.go): A in micro-panels of 6 rows and B in micro-panels of 16
// columns, both k-major. One k step of a B micro-panel is 16 floats, exactly
// one ZMM register, so no repacking is needed: the main kernel takes two A
// panels and two B panels at once (the second of each at a stride from the
// first) and keeps the 12×32 tile of C in 24 ZMM accumulators. Each k step
// is then two B loads, twelve broadcasts of A and 24 FMAs, using 28 of the 32
// ZMM registers. The smaller variants (12×16, 6×32, 6×16) finish the edges
// of a tile whose size is a multiple of 6 rows and 16 columns but not of
// 12 and 32.
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/reg"

	"github.com/galleon-ml/galleon/internal/kernels/_asm/internal/zmmgemm"
)

const (
	panelRows = 6  // rows of an A micro-panel
	panelCols = 16 // columns of a B micro-panel (one ZMM)

	// unroll is how many k steps one trip of the main loop covers.
	unroll = 4

	// prefetchB is how far ahead, in bytes, each B micro-panel stream is
	// prefetched into L1 (16 k steps).
	prefetchB = 1024
)

// How a kernel reads A (kernel's aForm).
const (
	packed     = iota // packed 6-row micro-panels
	directRows        // the rows of a row-major matrix, in place
	directCols        // a transposed matrix, in place
)

func main() {
	ConstraintExpr("amd64,!purego")
	for _, bias := range []bool{false, true} {
		for _, s := range [][2]int{{2, 2}, {2, 1}, {1, 2}, {1, 1}} {
			kernel(s[0], s[1], bias, packed)
		}
	}
	for _, bias := range []bool{false, true} {
		for _, bp := range []int{2, 1} {
			kernel(2, bp, bias, directRows)
		}
	}
	for _, bp := range []int{2, 1} {
		kernel(2, bp, false, directCols)
	}
	Generate()
}

// kernel emits the micro-kernel for an (ap·6)×(bp·16) tile: ap A panels and
// bp B panels; with bias, the variant whose accumulators start from a bias
// row (the forward pass of a linear layer with a bias).
//
// With directRows, A is read where it is stored (12 rows aStride floats
// apart, each row's k steps contiguous) instead of from packed panels: the
// product's A, when not transposed, then needs no packing. With directCols,
// A is a transposed matrix read in place: k step p of the 12 rows is the
// contiguous run at a + p·aStride.
func kernel(ap, bp int, bias bool, aForm int) {
	mr, nr := ap*panelRows, bp*panelCols
	variant := ""
	switch aForm {
	case directRows:
		variant += "Direct"
	case directCols:
		variant += "DirectT"
	}
	sig := "func(kc int, a *float32, aStride int, b *float32, bStride int, c *float32, ldc int, alpha, beta float32)"
	what := "C = alpha·A·B + beta·C"
	if bias {
		variant += "Bias"
		sig = "func(kc int, a *float32, aStride int, b *float32, bStride int, c *float32, ldc int, alpha, beta float32, bias *float32)"
		what = fmt.Sprintf("C = alpha·(A·B + bias) + beta·C, bias a row of %d floats added to every row,", nr)
	}
	name := fmt.Sprintf("sgemmKernel%dx%d%sAVX512", mr, nr, variant)
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	aDoc := []string{
		fmt.Sprintf("A is %d packed 6-row micro-panel(s), the second aStride floats after the", ap),
		"first;",
	}
	switch aForm {
	case directRows:
		aDoc = []string{
			fmt.Sprintf("A is %d rows of a row-major matrix, aStride floats apart, read in place;", mr),
		}
	case directCols:
		aDoc = []string{
			fmt.Sprintf("A is read in place from a transposed matrix: k step p of its %d rows is the", mr),
			"contiguous run at a + p·aStride floats;",
		}
	}
	Doc(append(append([]string{fmt.Sprintf("%s computes the %d×%d tile %s over kc k steps.", name, mr, nr, what)}, aDoc...),
		fmt.Sprintf("B is %d packed 16-column micro-panel(s), the second bStride floats", bp),
		"after the first. With beta == 0 C is only written, never read. ldc is the",
		"row stride of C in elements. kc must be positive.")...,
	)
	zmmgemm.Emit(zmmgemm.Tile{AP: ap, BP: bp, PanelRows: panelRows, PanelCols: panelCols, Unroll: unroll,
		PrefetchB: prefetchB, K: "kc", StepName: "k steps", Bias: bias,
		DirectA: aForm == directRows, DirectAT: aForm == directCols}, func(i int, o zmmgemm.Operands) {
		bv, bc := []VecPhysical{Z24, Z25}, []VecPhysical{Z26, Z27}
		for h := 0; h < bp; h++ {
			VMOVUPS(o.BMem(i, h), bv[h])
		}
		for r := 0; r < mr; r++ {
			t := bc[r%2]
			VBROADCASTSS(o.AMem(i, r), t)
			for h := 0; h < bp; h++ {
				VFMADD231PS(bv[h], t, o.Acc(r, h))
			}
		}
	})
}
