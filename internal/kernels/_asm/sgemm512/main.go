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
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
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

func main() {
	ConstraintExpr("amd64,!purego")
	for _, s := range [][2]int{{2, 2}, {2, 1}, {1, 2}, {1, 1}} {
		kernel(s[0], s[1])
	}
	Generate()
}

// kernel emits the micro-kernel for an (ap·6)×(bp·16) tile: ap A panels and
// bp B panels.
func kernel(ap, bp int) {
	mr, nr := ap*panelRows, bp*panelCols
	name := fmt.Sprintf("sgemmKernel%dx%dAVX512", mr, nr)
	TEXT(name, NOSPLIT, "func(kc int, a *float32, aStride int, b *float32, bStride int, c *float32, ldc int, alpha, beta float32)")
	Pragma("noescape")
	Doc(
		fmt.Sprintf("%s computes the %d×%d tile C = alpha·A·B + beta·C over kc k steps.", name, mr, nr),
		fmt.Sprintf("A is %d packed 6-row micro-panel(s), the second aStride floats after the", ap),
		fmt.Sprintf("first; B is %d packed 16-column micro-panel(s), the second bStride floats", bp),
		"after the first. With beta == 0 C is only written, never read. ldc is the",
		"row stride of C in elements. kc must be positive.",
	)
	acc := func(r, h int) VecPhysical { return zmm(r*bp + h) }

	kc, a, as, b, bs := RBX, RSI, R12, RDI, R13
	Load(Param("kc"), kc)
	MOVQ(paramAddr("a"), a)
	Load(Param("aStride"), as)
	SHLQ(Imm(2), as)
	MOVQ(paramAddr("b"), b)
	Load(Param("bStride"), bs)
	SHLQ(Imm(2), bs)

	// The tile of C is read (beta != 0) and written only after the k
	// loop; it is often in no cache (C is megabytes, and each KC step of
	// a product passes over all of it). Prefetching its lines now hides
	// those misses behind the loop: without it the epilogue stalls on up
	// to 24 misses per call.
	cp, ldc := R8, R9
	MOVQ(paramAddr("c"), cp)
	Load(Param("ldc"), ldc)
	SHLQ(Imm(2), ldc)
	for r := 0; r < mr; r++ {
		for h := 0; h < bp; h++ {
			PREFETCHT0(Mem{Base: cp, Disp: 64 * h})
		}
		if r < mr-1 {
			ADDQ(ldc, cp)
		}
	}

	for r := 0; r < mr; r++ {
		for h := 0; h < bp; h++ {
			VPXORD(acc(r, h), acc(r, h), acc(r, h))
		}
	}
	bv := []VecPhysical{Z24, Z25}
	bc := []VecPhysical{Z26, Z27}

	aMem := func(i, r int) Mem {
		m := Mem{Base: a, Disp: (i*panelRows + r%panelRows) * 4}
		if r >= panelRows {
			m.Index, m.Scale = as, 1
		}
		return m
	}
	bMem := func(i, h int) Mem {
		m := Mem{Base: b, Disp: i * panelCols * 4}
		if h > 0 {
			m.Index, m.Scale = bs, 1
		}
		return m
	}
	step := func(i int) {
		for h := 0; h < bp; h++ {
			VMOVUPS(bMem(i, h), bv[h])
		}
		for r := 0; r < mr; r++ {
			t := bc[r%2]
			VBROADCASTSS(aMem(i, r), t)
			for h := 0; h < bp; h++ {
				VFMADD231PS(bv[h], t, acc(r, h))
			}
		}
	}

	Comment(fmt.Sprintf("Main loop: %d k steps per trip.", unroll))
	Label("loop")
	CMPQ(kc, Imm(unroll))
	JL(LabelRef("tail"))
	for i := 0; i < unroll; i++ {
		for h := 0; h < bp; h++ {
			pm := bMem(i, h)
			pm.Disp += prefetchB
			PREFETCHT0(pm)
		}
		step(i)
	}
	ADDQ(U32(unroll*panelRows*4), a)
	ADDQ(U32(unroll*panelCols*4), b)
	SUBQ(Imm(unroll), kc)
	JMP(LabelRef("loop"))

	Label("tail")
	TESTQ(kc, kc)
	JZ(LabelRef("store"))
	step(0)
	ADDQ(Imm(panelRows*4), a)
	ADDQ(Imm(panelCols*4), b)
	DECQ(kc)
	JMP(LabelRef("tail"))

	Label("store")
	MOVQ(paramAddr("c"), cp)
	alpha, beta := Z24, Z25
	VBROADCASTSS(paramAddr("alpha"), alpha)
	// beta == 0 (either sign) selects the store-only path: C may hold NaNs.
	betaBits := EAX
	MOVL(paramAddr("beta"), betaBits)
	SHLL(Imm(1), betaBits)
	JZ(LabelRef("overwrite"))
	VBROADCASTSS(paramAddr("beta"), beta)
	for r := 0; r < mr; r++ {
		for h := 0; h < bp; h++ {
			m := Mem{Base: cp, Disp: 64 * h}
			VMULPS(alpha, acc(r, h), acc(r, h))
			VFMADD231PS(m, beta, acc(r, h))
			VMOVUPS(acc(r, h), m)
		}
		if r < mr-1 {
			ADDQ(ldc, cp)
		}
	}
	VZEROUPPER()
	RET()

	Label("overwrite")
	for r := 0; r < mr; r++ {
		for h := 0; h < bp; h++ {
			VMULPS(alpha, acc(r, h), acc(r, h))
			VMOVUPS(acc(r, h), Mem{Base: cp, Disp: 64 * h})
		}
		if r < mr-1 {
			ADDQ(ldc, cp)
		}
	}
	VZEROUPPER()
	RET()
}

func zmm(i int) VecPhysical {
	return []VecPhysical{
		Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11,
		Z12, Z13, Z14, Z15, Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23,
	}[i]
}

// paramAddr returns the stack address of a scalar argument, so that it can be
// a memory operand (VBROADCASTSS takes no general register).
func paramAddr(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}
