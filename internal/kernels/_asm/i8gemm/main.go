// Command i8gemm generates the AVX2 micro-kernels of the int8 GEMM in
// internal/kernels (i8gemm_amd64.s and its Go declarations).
//
//	cd internal/kernels/_asm && go run ./i8gemm -out ../i8gemm_amd64.s -stubs ../i8gemm_amd64_stubs.go -pkg kernels
//
// The packed layouts are defined by the Go driver (internal/kernels/i8gemm.go):
// k is padded to a multiple of 4 and cut into groups of 4 consecutive values.
// An A micro-panel holds 4 rows, 32 bytes per group: the values (row r at bytes
// 4r…4r+3) then their absolute values (bytes 16+4r…16+4r+3), packed once
// so the kernel needs no VPABSB;
// a B micro-panel holds 16 columns, 64 bytes per group (column j at bytes
// 4j…4j+3). One group is then one 4-byte broadcast of each A row, two 32-byte
// loads of B, and per row and half: VPSIGNB (b·sign(a)), VPMADDUBSW (|a| as
// the unsigned operand: pairs of products into int16, exact as
// 2·127·127 < 2^15), VPMADDWD with ones (pairs of int16 into int32) and VPADDD.
// With every value in [−127, 127] the int32 sums are exact while
// k·127² < 2^31.
//
// Measured on the 2-core EPYC: VPSIGNB, VPABSB, VPMADDUBSW and VPMADDWD
// share two pipes (VPADDD does not), so the kernel is bound by those
// instructions: dropping the per-row VPABSB (the absolute values come packed)
// took one core's kernel from ~130 to ~150 GOP/s; the fp32 6×16 kernel runs
// ~113 GFLOP/s.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

const (
	mr     = 4
	nr     = 16
	unroll = 4
)

func main() {
	ConstraintExpr("amd64,!purego")
	ones := GLOBL("i8gemmOnes16", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(2*i, U16(1))
	}
	kernel("i8gemmKernel4x16I32AVX2", false, ones)
	kernel("i8gemmKernel4x16F32AVX2", true, ones)
	kernelW16("i8gemmKernelW16I32AVX2", false)
	kernelW16("i8gemmKernelW16F32AVX2", true)
	Generate()
}

func acc(r, h int) VecPhysical {
	return []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7}[2*r+h]
}

func kernel(name string, f32 bool, ones Mem) {
	if f32 {
		TEXT(name, NOSPLIT, "func(kg int, a, b *int8, c *float32, ldc int, rs, cs, bias *float32, add bool)")
		Doc(
			name+" computes the 4×16 tile c[r][j] (+)= rs[r]·cs[j]·Σ a·b + bias[j]",
			"from a packed 4-row A micro-panel and a packed 16-column B micro-panel of",
			"kg groups of 4 k values (int8 in [−127, 127]). With add the result is added",
			"to c. ldc is the row stride of c in elements. kg must be positive.",
		)
	} else {
		TEXT(name, NOSPLIT, "func(kg int, a, b *int8, c *int32, ldc int, add bool)")
		Doc(
			name+" computes the 4×16 int32 tile c[r][j] (+)= Σ a·b from a packed",
			"4-row A micro-panel and a packed 16-column B micro-panel of kg groups of",
			"4 k values (int8 in [−127, 127]). With add the sums are added to c.",
			"ldc is the row stride of c in elements. kg must be positive.",
		)
	}
	Pragma("noescape")

	kg, ap, bp := RBX, RSI, RDI
	Load(Param("kg"), kg)
	Load(Param("a"), ap)
	Load(Param("b"), bp)
	for r := 0; r < mr; r++ {
		for h := 0; h < 2; h++ {
			VPXOR(acc(r, h), acc(r, h), acc(r, h))
		}
	}
	b0, b1, on, bc, ab, t0, t1 := Y8, Y9, Y10, Y11, Y12, Y13, Y14
	VMOVDQU(ones, on)

	step := func(i int) {
		VMOVDQU(Mem{Base: bp, Disp: i * 64}, b0)
		VMOVDQU(Mem{Base: bp, Disp: i*64 + 32}, b1)
		for r := 0; r < mr; r++ {
			VPBROADCASTD(Mem{Base: ap, Disp: i*32 + 4*r}, bc)
			VPBROADCASTD(Mem{Base: ap, Disp: i*32 + 16 + 4*r}, ab)
			VPSIGNB(bc, b0, t0)
			VPSIGNB(bc, b1, t1)
			VPMADDUBSW(t0, ab, t0)
			VPMADDUBSW(t1, ab, t1)
			VPMADDWD(on, t0, t0)
			VPMADDWD(on, t1, t1)
			VPADDD(t0, acc(r, 0), acc(r, 0))
			VPADDD(t1, acc(r, 1), acc(r, 1))
		}
	}
	Label("loop")
	CMPQ(kg, Imm(unroll))
	JL(LabelRef("tail"))
	for i := 0; i < unroll; i++ {
		if i%2 == 0 {
			PREFETCHT0(Mem{Base: bp, Disp: 512 + i*64})
			PREFETCHT0(Mem{Base: bp, Disp: 512 + (i+1)*64})
		}
		step(i)
	}
	ADDQ(Imm(unroll*32), ap)
	ADDQ(U32(unroll*64), bp)
	SUBQ(Imm(unroll), kg)
	JMP(LabelRef("loop"))

	Label("tail")
	TESTQ(kg, kg)
	JZ(LabelRef("store"))
	step(0)
	ADDQ(Imm(32), ap)
	ADDQ(Imm(64), bp)
	DECQ(kg)
	JMP(LabelRef("tail"))

	Label("store")
	store(f32)
}

// store emits the epilogue shared by the kernels: the accumulators
// Y0…Y7 go to c as int32 or, dequantized, as float32.
func store(f32 bool) {
	cp, ldc := R8, R9
	Load(Param("c"), cp)
	Load(Param("ldc"), ldc)
	SHLQ(Imm(2), ldc)
	addf := AL
	Load(Param("add"), addf)
	if !f32 {
		TESTB(addf, addf)
		JZ(LabelRef("overwrite"))
		for r := 0; r < mr; r++ {
			for h := 0; h < 2; h++ {
				VPADDD(Mem{Base: cp, Disp: 32 * h}, acc(r, h), acc(r, h))
				VMOVDQU(acc(r, h), Mem{Base: cp, Disp: 32 * h})
			}
			ADDQ(ldc, cp)
		}
		VZEROUPPER()
		RET()
		Label("overwrite")
		for r := 0; r < mr; r++ {
			for h := 0; h < 2; h++ {
				VMOVDQU(acc(r, h), Mem{Base: cp, Disp: 32 * h})
			}
			ADDQ(ldc, cp)
		}
		VZEROUPPER()
		RET()
		return
	}
	rs, cs, bias := R10, R11, R12
	Load(Param("rs"), rs)
	Load(Param("cs"), cs)
	Load(Param("bias"), bias)
	cs0, cs1, bi0, bi1, rsb, sc, t1 := Y8, Y9, Y10, Y11, Y12, Y13, Y14
	VMOVUPS(Mem{Base: cs}, cs0)
	VMOVUPS(Mem{Base: cs, Disp: 32}, cs1)
	VMOVUPS(Mem{Base: bias}, bi0)
	VMOVUPS(Mem{Base: bias, Disp: 32}, bi1)
	csv := []VecPhysical{cs0, cs1}
	biv := []VecPhysical{bi0, bi1}
	for _, add := range []bool{true, false} {
		if add {
			TESTB(addf, addf)
			JZ(LabelRef("overwritef"))
		} else {
			Label("overwritef")
		}
		for r := 0; r < mr; r++ {
			VBROADCASTSS(Mem{Base: rs, Disp: 4 * r}, rsb)
			for h := 0; h < 2; h++ {
				VCVTDQ2PS(acc(r, h), acc(r, h))
				VMULPS(csv[h], rsb, sc)
				if add {
					VADDPS(Mem{Base: cp, Disp: 32 * h}, biv[h], t1)
					VFMADD213PS(t1, sc, acc(r, h)) // acc = acc·sc + t1
				} else {
					VFMADD213PS(biv[h], sc, acc(r, h))
				}
				VMOVUPS(acc(r, h), Mem{Base: cp, Disp: 32 * h})
			}
			ADDQ(ldc, cp)
		}
		VZEROUPPER()
		RET()
	}
}

// kernelW16 emits the int16 variant: operands sign-extended to int16 when
// packed (A: 16 bytes per pair of k values, row r at bytes 4r…4r+3; B: 64
// bytes per pair, column j at bytes 4j…4j+3), one VPMADDWD and one VPADDD
// per row and half and k pair. Products of int8 values sign-extended to int16
// are exact, and so are the pair sums (2·127² < 2^31).
func kernelW16(name string, f32 bool) {
	if f32 {
		TEXT(name, NOSPLIT, "func(kp int, a, b *int16, c *float32, ldc int, rs, cs, bias *float32, add bool)")
		Doc(
			name+" computes the 4×16 tile c[r][j] (+)= rs[r]·cs[j]·Σ a·b + bias[j]",
			"from int16-packed 4-row A and 16-column B micro-panels of kp pairs of k",
			"values. With add the result is added to c. ldc is the row stride of c.",
		)
	} else {
		TEXT(name, NOSPLIT, "func(kp int, a, b *int16, c *int32, ldc int, add bool)")
		Doc(
			name+" computes the 4×16 int32 tile c[r][j] (+)= Σ a·b from int16-packed",
			"4-row A and 16-column B micro-panels of kp pairs of k values.",
		)
	}
	Pragma("noescape")
	kg, ap, bp := RBX, RSI, RDI
	Load(Param("kp"), kg)
	Load(Param("a"), ap)
	Load(Param("b"), bp)
	for r := 0; r < mr; r++ {
		for h := 0; h < 2; h++ {
			VPXOR(acc(r, h), acc(r, h), acc(r, h))
		}
	}
	b0, b1, bc, t0, t1 := Y8, Y9, Y11, Y13, Y14
	step := func(i int) {
		VMOVDQU(Mem{Base: bp, Disp: i * 64}, b0)
		VMOVDQU(Mem{Base: bp, Disp: i*64 + 32}, b1)
		for r := 0; r < mr; r++ {
			VPBROADCASTD(Mem{Base: ap, Disp: i*16 + 4*r}, bc)
			VPMADDWD(b0, bc, t0)
			VPMADDWD(b1, bc, t1)
			VPADDD(t0, acc(r, 0), acc(r, 0))
			VPADDD(t1, acc(r, 1), acc(r, 1))
		}
	}
	Label("loop")
	CMPQ(kg, Imm(unroll))
	JL(LabelRef("tail"))
	for i := 0; i < unroll; i++ {
		if i%2 == 0 {
			PREFETCHT0(Mem{Base: bp, Disp: 512 + i*64})
			PREFETCHT0(Mem{Base: bp, Disp: 512 + (i+1)*64})
		}
		step(i)
	}
	ADDQ(Imm(unroll*16), ap)
	ADDQ(U32(unroll*64), bp)
	SUBQ(Imm(unroll), kg)
	JMP(LabelRef("loop"))
	Label("tail")
	TESTQ(kg, kg)
	JZ(LabelRef("store"))
	step(0)
	ADDQ(Imm(16), ap)
	ADDQ(Imm(64), bp)
	DECQ(kg)
	JMP(LabelRef("tail"))
	Label("store")
	store(f32)
}
