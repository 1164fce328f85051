// Command sgemm generates the AVX2/FMA micro-kernel of the float32 GEMM in
// internal/kernels (sgemm_amd64.s and its Go declarations).
//
//	cd internal/kernels/_asm && go run ./sgemm -out ../sgemm_amd64.s -stubs ../sgemm_amd64_stubs.go -pkg kernels
//
// The layout of the packed operands is defined by the Go driver
// (internal/kernels/sgemm.go): an A micro-panel holds 6 rows, stored k-major
// (6 consecutive floats per k step); a B micro-panel holds 16 columns, stored
// k-major (16 consecutive floats per k step). The kernel keeps the 6×16 tile of
// C in 12 YMM accumulators (two per row), so each k step is two B loads, six
// broadcasts of A and twelve FMAs: 15 of the 16 YMM registers.
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

//go:generate go run . -out ../../sgemm_amd64.s -stubs ../../sgemm_amd64_stubs.go -pkg kernels

const (
	mr = 6  // rows of the C tile
	nr = 16 // columns of the C tile (two YMM vectors)

	// unroll is how many k steps one trip of the main loop covers: enough
	// to amortise the loop counter and pointer bumps, short enough that the
	// loop stays in the op cache.
	unroll = 8

	// prefetchB is how far ahead, in bytes, the B micro-panel is prefetched
	// into L1; A is read at 24 bytes per step, 2.7× slower than B, and
	// the hardware prefetcher keeps up with it unaided.
	prefetchB = 1024
)

func main() {
	ConstraintExpr("amd64,!purego")
	kernel6x16()
	Generate()
}

// acc returns the accumulator of row r, half h (columns 8h…8h+7).
func acc(r, h int) VecPhysical {
	return []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11}[2*r+h]
}

func kernel6x16() {
	TEXT("sgemmKernel6x16AVX2", NOSPLIT, "func(kc int, a, b, c *float32, ldc int, alpha, beta float32)")
	Pragma("noescape")
	Doc(
		"sgemmKernel6x16AVX2 computes the 6×16 tile C = alpha·A·B + beta·C, where A is",
		"a packed 6×kc micro-panel and B a packed kc×16 micro-panel; with beta == 0",
		"C is only written, never read. ldc is the row stride of C in elements.",
		"kc must be positive.",
	)

	kc, ap, bp := RBX, RSI, RDI
	Load(Param("kc"), kc)
	MOVQ(paramAddr("a"), ap)
	MOVQ(paramAddr("b"), bp)

	for r := 0; r < mr; r++ {
		for h := 0; h < 2; h++ {
			VXORPS(acc(r, h), acc(r, h), acc(r, h))
		}
	}

	b0, b1, bc := Y12, Y13, Y14

	// step emits one k step whose operands sit at offset i steps from the
	// current pointers.
	step := func(i int) {
		VMOVUPS(Mem{Base: bp, Disp: i * nr * 4}, b0)
		VMOVUPS(Mem{Base: bp, Disp: i*nr*4 + 32}, b1)
		for r := 0; r < mr; r++ {
			VBROADCASTSS(Mem{Base: ap, Disp: (i*mr + r) * 4}, bc)
			VFMADD231PS(b0, bc, acc(r, 0))
			VFMADD231PS(b1, bc, acc(r, 1))
		}
	}

	Comment(fmt.Sprintf("Main loop: %d k steps per trip.", unroll))
	Label("loop")
	CMPQ(kc, Imm(unroll))
	JL(LabelRef("tail"))
	for i := 0; i < unroll; i++ {
		if i%2 == 0 {
			// One prefetch per 64-byte line of B, i.e. per k step,
			// issued every other step for the two lines ahead.
			PREFETCHT0(Mem{Base: bp, Disp: prefetchB + i*nr*4})
			PREFETCHT0(Mem{Base: bp, Disp: prefetchB + (i+1)*nr*4})
		}
		step(i)
	}
	ADDQ(U32(unroll*mr*4), ap)
	ADDQ(U32(unroll*nr*4), bp)
	SUBQ(Imm(unroll), kc)
	JMP(LabelRef("loop"))

	Label("tail")
	TESTQ(kc, kc)
	JZ(LabelRef("store"))
	step(0)
	ADDQ(Imm(mr*4), ap)
	ADDQ(Imm(nr*4), bp)
	DECQ(kc)
	JMP(LabelRef("tail"))

	Label("store")
	cp, ldc, ldc3, cp3 := R8, R9, R10, R11
	MOVQ(paramAddr("c"), cp)
	Load(Param("ldc"), ldc)
	SHLQ(Imm(2), ldc)
	LEAQ(Mem{Base: ldc, Index: ldc, Scale: 2}, ldc3)
	LEAQ(Mem{Base: cp, Index: ldc3, Scale: 1}, cp3)
	rowMem := func(r, h int) Mem {
		base := cp
		if r >= 3 {
			base = cp3
		}
		m := Mem{Base: base, Disp: 32 * h}
		if r%3 != 0 {
			m.Index, m.Scale = ldc, uint8(r%3)
		}
		return m
	}

	alpha, beta := Y12, Y13
	VBROADCASTSS(paramAddr("alpha"), alpha)
	// beta == 0 (either sign) selects the store-only path: C may hold NaNs.
	betaBits := EAX
	MOVL(paramAddr("beta"), betaBits)
	SHLL(Imm(1), betaBits)
	JZ(LabelRef("overwrite"))
	VBROADCASTSS(paramAddr("beta"), beta)
	for r := 0; r < mr; r++ {
		for h := 0; h < 2; h++ {
			VMULPS(alpha, acc(r, h), acc(r, h))
			VFMADD231PS(rowMem(r, h), beta, acc(r, h))
			VMOVUPS(acc(r, h), rowMem(r, h))
		}
	}
	VZEROUPPER()
	RET()

	Label("overwrite")
	for r := 0; r < mr; r++ {
		for h := 0; h < 2; h++ {
			VMULPS(alpha, acc(r, h), acc(r, h))
			VMOVUPS(acc(r, h), rowMem(r, h))
		}
	}
	VZEROUPPER()
	RET()
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
