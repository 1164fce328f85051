// Command i8gemm generates the AVX2 and AVX-512 VNNI micro-kernels of the
// int8 GEMM in internal/kernels (i8gemm_amd64.s and its Go declarations); the
// VNNI kernels and their packed layouts are described at kernelVNNI.
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
// ~113 GFLOP/s. The VNNI kernel (one VPDPBUSD per 64 multiply-adds) ran
// ~455 GOP/s on one core with ZMM registers, ~435 with YMM.
package main

import (
	"fmt"

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
	kernelW16("i8gemmKernelW16I32AVX2", false, mr)
	kernelW16("i8gemmKernelW16F32AVX2", true, mr)
	for rows := 1; rows < mr; rows++ {
		kernelW16(fmt.Sprintf("i8gemmKernelW16F32R%dAVX2", rows), true, rows)
	}
	kernelVNNI("i8gemmKernelVNNIZI32", false, 512, 1)
	kernelVNNI("i8gemmKernelVNNIZF32", true, 512, 1)
	kernelVNNI("i8gemmKernelVNNIYI32", false, 256, 1)
	kernelVNNI("i8gemmKernelVNNIYF32", true, 256, 1)
	kernelVNNI("i8gemmKernelVNNIZ8I32", false, 512, 2)
	kernelVNNI("i8gemmKernelVNNIZ8F32", true, 512, 2)
	absMaxBits()
	quantW16()
	quantVNNI()
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
	store(f32, mr)
}

// store emits the epilogue shared by the kernels: the accumulators
// Y0…Y7 go to c as int32 or, dequantized, as float32.
func store(f32 bool, rows int) {
	cp, ldc := R8, R9
	Load(Param("c"), cp)
	Load(Param("ldc"), ldc)
	SHLQ(Imm(2), ldc)
	addf := AL
	Load(Param("add"), addf)
	if !f32 {
		TESTB(addf, addf)
		JZ(LabelRef("overwrite"))
		for r := 0; r < rows; r++ {
			for h := 0; h < 2; h++ {
				VPADDD(Mem{Base: cp, Disp: 32 * h}, acc(r, h), acc(r, h))
				VMOVDQU(acc(r, h), Mem{Base: cp, Disp: 32 * h})
			}
			ADDQ(ldc, cp)
		}
		VZEROUPPER()
		RET()
		Label("overwrite")
		for r := 0; r < rows; r++ {
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
		for r := 0; r < rows; r++ {
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
func kernelW16(name string, f32 bool, rows int) {
	if f32 {
		TEXT(name, NOSPLIT, "func(kp int, a, b *int16, c *float32, ldc int, rs, cs, bias *float32, add bool)")
		Doc(
			name+fmt.Sprintf(" computes the %d×16 tile c[r][j] (+)= rs[r]·cs[j]·Σ a·b + bias[j]", rows),
			"from int16-packed 4-row A and 16-column B micro-panels of kp pairs of k",
			"values (the first rows of the A panel). With add the result is added",
			"to c. ldc is the row stride of c.",
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
	for r := 0; r < rows; r++ {
		for h := 0; h < 2; h++ {
			VPXOR(acc(r, h), acc(r, h), acc(r, h))
		}
	}
	b0, b1, bc, t0, t1 := Y8, Y9, Y11, Y13, Y14
	step := func(i int) {
		VMOVDQU(Mem{Base: bp, Disp: i * 64}, b0)
		VMOVDQU(Mem{Base: bp, Disp: i*64 + 32}, b1)
		for r := 0; r < rows; r++ {
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
	store(f32, rows)
}

// absMaxBits emits the largest |x| of a slice as float32 bits, compared as
// integers: NaN bits exceed +Inf's, which exceed every finite value's, so the
// result is NaN-propagating and exact.
func absMaxBits() {
	TEXT("i8AbsMaxBitsAVX2", NOSPLIT, "func(x []float32) uint32")
	Pragma("noescape")
	Doc("i8AbsMaxBitsAVX2 returns max over x of the bits of |x[i]| (0 for an empty x).")
	p := Load(Param("x").Base(), GP64())
	n := Load(Param("x").Len(), GP64())
	mask := GLOBL("i8AbsMask", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(0x7fffffff))
	}
	m := YMM()
	VMOVDQU(mask, m)
	acc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, a := range acc {
		VPXOR(a, a, a)
	}
	Label("abs32")
	CMPQ(n, Imm(32))
	JL(LabelRef("abs8"))
	for i, a := range acc {
		t := YMM()
		VPAND(Mem{Base: p, Disp: 32 * i}, m, t)
		VPMAXSD(t, a, a)
	}
	ADDQ(Imm(128), p)
	SUBQ(Imm(32), n)
	JMP(LabelRef("abs32"))
	Label("abs8")
	CMPQ(n, Imm(8))
	JL(LabelRef("absreduce"))
	t := YMM()
	VPAND(Mem{Base: p}, m, t)
	VPMAXSD(t, acc[0], acc[0])
	ADDQ(Imm(32), p)
	SUBQ(Imm(8), n)
	JMP(LabelRef("abs8"))
	Label("absreduce")
	VPMAXSD(acc[1], acc[0], acc[0])
	VPMAXSD(acc[3], acc[2], acc[2])
	VPMAXSD(acc[2], acc[0], acc[0])
	x := XMM()
	VEXTRACTI128(Imm(1), acc[0], x)
	VPMAXSD(x, acc[0].AsX(), x)
	y := XMM()
	VPSHUFD(Imm(0x4e), x, y)
	VPMAXSD(y, x, x)
	VPSHUFD(Imm(0xb1), x, y)
	VPMAXSD(y, x, x)
	r := GP32()
	VMOVD(x, r)
	Label("abstail")
	TESTQ(n, n)
	JZ(LabelRef("absdone"))
	v := GP32()
	MOVL(Mem{Base: p}, v)
	ANDL(U32(0x7fffffff), v)
	CMPL(v, r)
	CMOVLGT(v, r)
	ADDQ(Imm(4), p)
	DECQ(n)
	JMP(LabelRef("abstail"))
	Label("absdone")
	Store(r, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// quantW16 emits the activation quantization of four rows into the W16
// layout of A: q = round(x·inv[r]) (to nearest even) clamped to ±127, for k8
// blocks of 8 columns. Each block of the four rows becomes 64 bytes: four k
// pairs, each holding the pair of every row (row r at bytes 4r…4r+3 of the
// pair's 16 bytes).
func quantW16() {
	TEXT("i8QuantW16AVX2", NOSPLIT, "func(k8 int, x *float32, ldx int, inv *float32, dst *int16)")
	Pragma("noescape")
	Doc(
		"i8QuantW16AVX2 quantizes x[r·ldx+q]·inv[r] for r < 4, q < 8·k8 into the W16",
		"layout of a packed A micro-panel at dst (64 bytes per 8 columns).",
	)
	k8 := Load(Param("k8"), GP64())
	x := Load(Param("x"), GP64())
	ldx := Load(Param("ldx"), GP64())
	SHLQ(Imm(2), ldx)
	inv := Load(Param("inv"), GP64())
	dst := Load(Param("dst"), GP64())
	hi := GLOBL("i8Q127", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(0x42fe0000)) // 127
	}
	lo := GLOBL("i8QM127", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(0xc2fe0000)) // −127
	}
	vh, vl := YMM(), YMM()
	VMOVUPS(hi, vh)
	VMOVUPS(lo, vl)
	sc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for r := range sc {
		VBROADCASTSS(Mem{Base: inv, Disp: 4 * r}, sc[r])
	}
	x1, x2, x3 := GP64(), GP64(), GP64()
	MOVQ(x, x1)
	ADDQ(ldx, x1)
	LEAQ(Mem{Base: x, Index: ldx, Scale: 2}, x2)
	LEAQ(Mem{Base: x1, Index: ldx, Scale: 2}, x3)
	rows := []Register{x, x1, x2, x3}
	Label("qloop")
	TESTQ(k8, k8)
	JZ(LabelRef("qdone"))
	v := make([]VecVirtual, 4)
	for r := 0; r < 4; r++ {
		v[r] = YMM()
		VMULPS(Mem{Base: rows[r]}, sc[r], v[r])
		VMINPS(vh, v[r], v[r])
		VMAXPS(vl, v[r], v[r])
		VCVTPS2DQ(v[r], v[r])
	}
	a, b := YMM(), YMM()
	VPACKSSDW(v[1], v[0], a) // lanes: r0 k0-3, r1 k0-3 | r0 k4-7, r1 k4-7
	VPACKSSDW(v[3], v[2], b)
	VPSHUFD(Imm(0xd8), a, a) // dwords: r0p0 r1p0 r0p1 r1p1 | …p2, p3
	VPSHUFD(Imm(0xd8), b, b)
	l, h := YMM(), YMM()
	VPUNPCKLQDQ(b, a, l) // p0 | p2
	VPUNPCKHQDQ(b, a, h) // p1 | p3
	o1, o2 := YMM(), YMM()
	VPERM2I128(Imm(0x20), h, l, o1) // p0 p1
	VPERM2I128(Imm(0x31), h, l, o2) // p2 p3
	VMOVDQU(o1, Mem{Base: dst})
	VMOVDQU(o2, Mem{Base: dst, Disp: 32})
	for _, r := range rows {
		ADDQ(Imm(32), r)
	}
	ADDQ(Imm(64), dst)
	DECQ(k8)
	JMP(LabelRef("qloop"))
	Label("qdone")
	VZEROUPPER()
	RET()
}

// kernelVNNI emits the AVX-512 VNNI kernel of the (4·panels)×16 tile:
// VPDPBUSD multiplies unsigned bytes by signed bytes and adds each group of
// four products to an int32 lane. A is packed offset by 128 (u8 = a + 128; 16
// bytes per group of 4 k values, row r at bytes 4r…4r+3), B as signed bytes
// (the int8 layout: 64 bytes per group, column j at bytes 4j…4j+3), so each
// lane sums Σ (a+128)·b = Σ a·b + 128·Σ b; the epilogue subtracts the column
// correction corr[j] = 128·Σ_q b[j][q] computed when B was packed. VPDPBUSD
// does not saturate (each 4-product sum is below 2^17 and the lane adds wrap
// modulo 2^32), so the result is exact whenever Σ a·b fits in int32, which
// k ≤ MaxI8K guarantees, even where Σ (a+128)·b itself would not fit.
//
// With bits = 512 one ZMM holds a row of the tile (16 lanes); with 256 two
// YMMs do. With panels = 2 the tile takes two consecutive 4-row A
// micro-panels (the second 16·kg bytes after the first), so each load of B
// serves 8 rows and a call does twice the work for the same overhead. Where
// the tile has 4 rows, even and odd groups go to separate accumulators
// (8 ZMMs, or 16 YMMs: AVX-512VL gives 32 vector registers) so consecutive
// VPDPBUSDs do not wait on each other's latency; 8 rows are enough chains.
func kernelVNNI(name string, f32 bool, bits, panels int) {
	rows := mr * panels
	if f32 {
		TEXT(name, NOSPLIT, "func(kg int, a, b *int8, corr *int32, c *float32, ldc int, rs, cs, bias *float32, add bool)")
		Doc(
			fmt.Sprintf("%s computes the %d×16 tile c[r][j] (+)= rs[r]·cs[j]·(Σ (a+128)·b − corr[j]) + bias[j]", name, rows),
			fmt.Sprintf("from %d offset-packed 4-row A micro-panel(s) (u8 = a + 128, 16·kg bytes each) and an int8", panels),
			"16-column B micro-panel of kg groups of 4 k values, with AVX-512 VNNI.",
			"corr[j] = 128·Σ b[j]. With add the result is added to c. kg must be positive.",
		)
	} else {
		TEXT(name, NOSPLIT, "func(kg int, a, b *int8, corr *int32, c *int32, ldc int, add bool)")
		Doc(
			fmt.Sprintf("%s computes the %d×16 int32 tile c[r][j] (+)= Σ (a+128)·b − corr[j]", name, rows),
			fmt.Sprintf("from %d offset-packed 4-row A micro-panel(s) (u8 = a + 128, 16·kg bytes each) and an int8", panels),
			"16-column B micro-panel of kg groups of 4 k values, with AVX-512 VNNI.",
			"corr[j] = 128·Σ b[j]. With add the sums are added to c. kg must be positive.",
		)
	}
	Pragma("noescape")
	nv := 512 / bits // vectors per tile row
	vb := bits / 8   // bytes per vector
	sets := 1        // accumulator sets (even and odd groups)
	if panels == 1 {
		sets = 2
	}
	vec := func(i int) VecPhysical {
		if bits == 512 {
			return []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15,
				Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23, Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}[i]
		}
		return []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15,
			Y16, Y17, Y18, Y19, Y20, Y21, Y22, Y23, Y24, Y25, Y26, Y27, Y28, Y29, Y30, Y31}[i]
	}
	// acc(set, r, h): accumulator of row r, vector h, set 0 (even groups)
	// or 1 (odd groups).
	acc := func(set, r, h int) VecPhysical { return vec(set*rows*nv + r*nv + h) }
	bv := func(h int) VecPhysical { return vec(sets*rows*nv + h) }
	abc := func(r int) VecPhysical { return vec(sets*rows*nv + nv + r) }

	kg, ap, bp, ap2 := RBX, RSI, RDI, R14
	Load(Param("kg"), kg)
	Load(Param("a"), ap)
	Load(Param("b"), bp)
	if panels == 2 {
		MOVQ(kg, ap2)
		SHLQ(Imm(4), ap2)
		ADDQ(ap, ap2)
	}
	for set := 0; set < sets; set++ {
		for r := 0; r < rows; r++ {
			for h := 0; h < nv; h++ {
				VPXORD(acc(set, r, h), acc(set, r, h), acc(set, r, h))
			}
		}
	}
	step := func(i int) {
		set := i % sets
		for h := 0; h < nv; h++ {
			VMOVDQU32(Mem{Base: bp, Disp: i*64 + h*vb}, bv(h))
		}
		for r := 0; r < rows; r++ {
			base := ap
			if r >= mr {
				base = ap2
			}
			VPBROADCASTD(Mem{Base: base, Disp: i*16 + 4*(r%mr)}, abc(r))
			for h := 0; h < nv; h++ {
				VPDPBUSD(bv(h), abc(r), acc(set, r, h)) // acc += u8(abc)·s8(bv)
			}
		}
	}
	advance := func(groups int) {
		ADDQ(Imm(uint64(groups*16)), ap)
		if panels == 2 {
			ADDQ(Imm(uint64(groups*16)), ap2)
		}
		if groups*64 < 128 {
			ADDQ(Imm(uint64(groups*64)), bp)
		} else {
			ADDQ(U32(groups*64), bp)
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
	advance(unroll)
	SUBQ(Imm(unroll), kg)
	JMP(LabelRef("loop"))
	Label("tail")
	TESTQ(kg, kg)
	JZ(LabelRef("store"))
	step(0)
	advance(1)
	DECQ(kg)
	JMP(LabelRef("tail"))

	Label("store")
	corr := R13
	Load(Param("corr"), corr)
	for h := 0; h < nv; h++ {
		VMOVDQU32(Mem{Base: corr, Disp: h * vb}, bv(h))
	}
	for r := 0; r < rows; r++ {
		for h := 0; h < nv; h++ {
			if sets == 2 {
				VPADDD(acc(1, r, h), acc(0, r, h), acc(0, r, h))
			}
			VPSUBD(bv(h), acc(0, r, h), acc(0, r, h))
		}
	}
	cp, ldc := R8, R9
	Load(Param("c"), cp)
	Load(Param("ldc"), ldc)
	SHLQ(Imm(2), ldc)
	addf := AL
	Load(Param("add"), addf)
	if !f32 {
		for _, add := range []bool{true, false} {
			if add {
				TESTB(addf, addf)
				JZ(LabelRef("overwrite"))
			} else {
				Label("overwrite")
			}
			for r := 0; r < rows; r++ {
				for h := 0; h < nv; h++ {
					if add {
						VPADDD(Mem{Base: cp, Disp: vb * h}, acc(0, r, h), acc(0, r, h))
					}
					VMOVDQU32(acc(0, r, h), Mem{Base: cp, Disp: vb * h})
				}
				ADDQ(ldc, cp)
			}
			VZEROUPPER()
			RET()
		}
		return
	}
	rs, cs, bias := R10, R11, R12
	Load(Param("rs"), rs)
	Load(Param("cs"), cs)
	Load(Param("bias"), bias)
	// Free registers for the epilogue: those past the accumulators in use.
	free := sets*rows*nv + nv + rows
	if sets == 2 {
		free = rows * nv // the odd set, already added
	}
	csv := func(h int) VecPhysical { return vec(free + h) }
	biv := func(h int) VecPhysical { return vec(free + nv + h) }
	rsb, sc, t1 := vec(free+2*nv), vec(free+2*nv+1), vec(free+2*nv+2)
	for h := 0; h < nv; h++ {
		VMOVUPS(Mem{Base: cs, Disp: vb * h}, csv(h))
		VMOVUPS(Mem{Base: bias, Disp: vb * h}, biv(h))
	}
	for _, add := range []bool{true, false} {
		if add {
			TESTB(addf, addf)
			JZ(LabelRef("overwritef"))
		} else {
			Label("overwritef")
		}
		for r := 0; r < rows; r++ {
			VBROADCASTSS(Mem{Base: rs, Disp: 4 * r}, rsb)
			for h := 0; h < nv; h++ {
				a := acc(0, r, h)
				VCVTDQ2PS(a, a)
				VMULPS(csv(h), rsb, sc)
				if add {
					VADDPS(Mem{Base: cp, Disp: vb * h}, biv(h), t1)
					VFMADD213PS(t1, sc, a) // a = a·sc + t1
				} else {
					VFMADD213PS(biv(h), sc, a)
				}
				VMOVUPS(a, Mem{Base: cp, Disp: vb * h})
			}
			ADDQ(ldc, cp)
		}
		VZEROUPPER()
		RET()
	}
}

// quantVNNI emits the activation quantization of four rows into the VNNI
// layout of A: q = round(x·inv[r]) (to nearest even) clamped to ±127, stored
// as the byte q + 128 (q XOR 0x80), for k16 blocks of 16 columns. Each block
// becomes 64 bytes: four groups of 4 k values, each holding the group of every
// row (row r at bytes 4r…4r+3 of the group's 16 bytes).
func quantVNNI() {
	TEXT("i8QuantVNNIAVX512", NOSPLIT, "func(k16 int, x *float32, ldx int, inv *float32, dst *int8)")
	Pragma("noescape")
	Doc(
		"i8QuantVNNIAVX512 quantizes x[r·ldx+q]·inv[r] for r < 4, q < 16·k16 into the",
		"offset VNNI layout of a packed A micro-panel at dst (64 bytes per 16 columns).",
	)
	k16 := Load(Param("k16"), GP64())
	x := Load(Param("x"), GP64())
	ldx := Load(Param("ldx"), GP64())
	SHLQ(Imm(2), ldx)
	inv := Load(Param("inv"), GP64())
	dst := Load(Param("dst"), GP64())
	vh, vl, off := Z16, Z17, X18
	hi := GLOBL("i8QV127", RODATA|NOPTR)
	DATA(0, U32(0x42fe0000)) // 127
	DATA(4, U32(0xc2fe0000)) // −127
	DATA(8, U32(0x80808080))
	VBROADCASTSS(hi, vh)
	VBROADCASTSS(hi.Offset(4), vl)
	VPBROADCASTD(hi.Offset(8), off)
	sc := []VecPhysical{Z20, Z21, Z22, Z23}
	for r := range sc {
		VBROADCASTSS(Mem{Base: inv, Disp: 4 * r}, sc[r])
	}
	x1, x2, x3 := GP64(), GP64(), GP64()
	MOVQ(x, x1)
	ADDQ(ldx, x1)
	LEAQ(Mem{Base: x, Index: ldx, Scale: 2}, x2)
	LEAQ(Mem{Base: x1, Index: ldx, Scale: 2}, x3)
	rows := []Register{x, x1, x2, x3}
	zs := []VecPhysical{Z0, Z1, Z2, Z3}
	xs := []VecPhysical{X4, X5, X6, X7}
	Label("qvloop")
	TESTQ(k16, k16)
	JZ(LabelRef("qvdone"))
	for r := 0; r < 4; r++ {
		VMULPS(Mem{Base: rows[r]}, sc[r], zs[r])
		VMINPS(vh, zs[r], zs[r])
		VMAXPS(vl, zs[r], zs[r])
		VCVTPS2DQ(zs[r], zs[r])
		VPMOVSDB(zs[r], xs[r]) // row r: 16 bytes, k0…k15
	}
	// Transpose the 4×4 matrix of dwords (row r, group g).
	t0, t1, t2, t3 := X8, X9, X10, X11
	VPUNPCKLDQ(xs[1], xs[0], t0) // r0g0 r1g0 r0g1 r1g1
	VPUNPCKHDQ(xs[1], xs[0], t1) // r0g2 r1g2 r0g3 r1g3
	VPUNPCKLDQ(xs[3], xs[2], t2)
	VPUNPCKHDQ(xs[3], xs[2], t3)
	g0, g1, g2, g3 := X12, X13, X14, X15
	VPUNPCKLQDQ(t2, t0, g0)
	VPUNPCKHQDQ(t2, t0, g1)
	VPUNPCKLQDQ(t3, t1, g2)
	VPUNPCKHQDQ(t3, t1, g3)
	for i, g := range []VecPhysical{g0, g1, g2, g3} {
		VPXORD(off, g, g)
		VMOVDQU(g, Mem{Base: dst, Disp: 16 * i})
	}
	for _, r := range rows {
		ADDQ(Imm(64), r)
	}
	ADDQ(Imm(64), dst)
	DECQ(k16)
	JMP(LabelRef("qvloop"))
	Label("qvdone")
	VZEROUPPER()
	RET()
}
