// Command tile generates the AVX2/FMA and AVX-512 tile kernels of the
// FlashAttention kernels in package attention (attention/tile_amd64.s, and its Go
// declarations in attention/tile_amd64_stubs.go):
//
//	cd internal/kernels/_asm && go run ./tile -out ../../../attention/tile_amd64.s -stubs ../../../attention/tile_amd64_stubs.go -pkg attention
//
// The products and their modes are described in attention/tile.go. Unlike
// the GEMM micro-kernel, the tile kernel reads its operands in place (A with
// any row and column strides, B row-major), because the attention tiles are
// small and used once: packing them would cost as much as the product. It
// keeps six rows × 16 columns of C in twelve YMM accumulators; each step of
// k is two B loads, six broadcasts of A and twelve FMAs, so every element of
// C is one sequential FMA chain over k (dotChain reproduces that rounding for
// a single element).
//
// The AVX-512 kernel kern6x32 keeps six rows × 32 columns in twelve ZMM
// accumulators and also takes the chunk length kc of the products over the
// head dimension (see dotChunk in attention/tile.go): it adds the chunks'
// chains in twelve more ZMM registers instead of storing and reloading the
// C block after every chunk, in the same order, so its results are
// bit-identical to kern6x16's chunk by chunk.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The modes of attention/tile.go.
const (
	tileAdd   = 1
	tileDS    = 2
	tileDSAdd = 3
)

func main() {
	ConstraintExpr("amd64,!purego")
	kern6x16()
	kern6x32()
	dotChain()
	dotChain8()
	scaleRows()
	transpose8()
	Generate()
}

func paramAddr(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

// byteStride loads the element stride argument name into r as bytes.
func byteStride(name string, r Register) {
	MOVQ(paramAddr(name), r)
	SHLQ(Imm(2), r)
}

// acc returns the accumulator of row r, half h (columns 8h…8h+7).
func acc(r, h int) VecPhysical {
	return []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11}[2*r+h]
}

// loadTileArgs loads the arguments kern6x16 and kern6x32 share: R11 n
// (columns left), R12 a, DX sai·4, SI 3·sai·4, DI 5·sai·4, R8 sak·4, R13 b,
// R9 ldb·4, R10 c.
func loadTileArgs() {
	MOVQ(paramAddr("n"), R11)
	MOVQ(paramAddr("a"), R12)
	byteStride("sai", RDX)
	LEAQ(Mem{Base: RDX, Index: RDX, Scale: 2}, RSI)
	LEAQ(Mem{Base: RDX, Index: RDX, Scale: 4}, RDI)
	byteStride("sak", R8)
	MOVQ(paramAddr("b"), R13)
	byteStride("ldb", R9)
	MOVQ(paramAddr("c"), R10)
}

// rowA addresses row r of the A panel at AX: a + r·sai·4 is DX·{0,1,2,4},
// SI (3) or DI (5) past AX.
func rowA(r int) Mem {
	return []Mem{
		{Base: RAX},
		{Base: RAX, Index: RDX, Scale: 1},
		{Base: RAX, Index: RDX, Scale: 2},
		{Base: RAX, Index: RSI, Scale: 1},
		{Base: RAX, Index: RDX, Scale: 4},
		{Base: RAX, Index: RDI, Scale: 1},
	}[r]
}

func kern6x16() {
	TEXT("kern6x16", NOSPLIT, "func(n, k int, a *float32, sai, sak int, b *float32, ldb int, c *float32, ldc int, mode int, p, dv *float32)")
	Pragma("noescape")
	Doc(
		"kern6x16 computes rows [0, 6) and columns [0, n) of C = op(A·B) (see",
		"tile.go): n is a positive multiple of 16, k is positive, a, c (and p, dv in",
		"tileDS mode) point at the block's first row.",
	)
	// Registers: AX a (running), BX b (running), CX k count, DX sai·4,
	// SI 3·sai·4, DI 5·sai·4, R8 sak·4, R9 ldb·4, R10 C block, R11 columns
	// left, R12 a base, R13 b column base.
	loadTileArgs()

	Label("colblock")
	MOVQ(R12, RAX)
	MOVQ(R13, RBX)
	MOVQ(paramAddr("k"), RCX)
	for r := 0; r < 6; r++ {
		for h := 0; h < 2; h++ {
			VXORPS(acc(r, h), acc(r, h), acc(r, h))
		}
	}

	Label("kloop")
	VMOVUPS(Mem{Base: RBX}, Y12)
	VMOVUPS(Mem{Base: RBX, Disp: 32}, Y13)
	for r := 0; r < 6; r++ {
		bc := []VecPhysical{Y14, Y15}[r%2]
		VBROADCASTSS(rowA(r), bc)
		VFMADD231PS(Y12, bc, acc(r, 0))
		VFMADD231PS(Y13, bc, acc(r, 1))
	}
	ADDQ(R8, RAX)
	ADDQ(R9, RBX)
	DECQ(RCX)
	JNZ(LabelRef("kloop"))

	Comment("Epilogue: BX walks the rows of the C block, CX is ldc·4.")
	byteStride("ldc", RCX)
	MOVQ(R10, RBX)
	MOVQ(paramAddr("mode"), RAX)
	CMPQ(RAX, Imm(tileAdd))
	JEQ(LabelRef("addmode"))
	CMPQ(RAX, Imm(tileDS))
	JEQ(LabelRef("dsmode"))
	CMPQ(RAX, Imm(tileDSAdd))
	JEQ(LabelRef("dsaddmode"))

	// rows emits f for each row, stepping BX (and the extra pointers) by
	// one row of C between rows.
	rows := func(f func(r int), step ...Register) {
		for r := 0; r < 6; r++ {
			f(r)
			if r < 5 {
				ADDQ(RCX, RBX)
				for _, s := range step {
					ADDQ(RCX, s)
				}
			}
		}
	}
	store := func(r int) {
		VMOVUPS(acc(r, 0), Mem{Base: RBX})
		VMOVUPS(acc(r, 1), Mem{Base: RBX, Disp: 32})
	}
	addC := func(r int) {
		VADDPS(Mem{Base: RBX}, acc(r, 0), acc(r, 0))
		VADDPS(Mem{Base: RBX, Disp: 32}, acc(r, 1), acc(r, 1))
	}

	rows(store)
	JMP(LabelRef("next"))

	Label("addmode")
	rows(func(r int) { addC(r); store(r) })
	JMP(LabelRef("next"))

	Label("dsaddmode")
	Comment("acc += C, then fall into the DS epilogue with BX back at the block.")
	rows(addC)
	MOVQ(R10, RBX)

	Label("dsmode")
	Comment("C = P ∘ (acc − dv[row]); AX walks P like BX walks C.")
	subDV(acc, []VecPhysical{Y12, Y13, Y14, Y15})
	MOVQ(paramAddr("p"), RAX)
	ADDQ(R10, RAX)
	SUBQ(paramAddr("c"), RAX)
	rows(func(r int) {
		VMULPS(Mem{Base: RAX}, acc(r, 0), acc(r, 0))
		VMULPS(Mem{Base: RAX, Disp: 32}, acc(r, 1), acc(r, 1))
		store(r)
	}, RAX)

	Label("next")
	ADDQ(Imm(64), R10)
	ADDQ(Imm(64), R13)
	SUBQ(Imm(16), R11)
	JNZ(LabelRef("colblock"))
	VZEROUPPER()
	RET()
}

// subDV emits the first step of the tileDS epilogue, acc(r, ·) −= dv[r] for
// the six rows, with dv loaded into AX and broadcast through the four
// scratch registers tmp.
func subDV(acc func(r, h int) VecPhysical, tmp []VecPhysical) {
	MOVQ(paramAddr("dv"), RAX)
	for r0 := 0; r0 < 6; r0 += 4 {
		r1 := min(r0+4, 6)
		for r := r0; r < r1; r++ {
			VBROADCASTSS(Mem{Base: RAX, Disp: 4 * r}, tmp[r-r0])
		}
		for r := r0; r < r1; r++ {
			VSUBPS(tmp[r-r0], acc(r, 0), acc(r, 0))
			VSUBPS(tmp[r-r0], acc(r, 1), acc(r, 1))
		}
	}
}

func dotChain() {
	TEXT("dotChain", NOSPLIT, "func(x, y *float32, n, kc int) float32")
	Pragma("noescape")
	Doc(
		"dotChain returns Σ x[i]·y[i] for i < n, rounded exactly as kern6x16",
		"rounds one element of a product over k = n split into chunks of kc:",
		"a sequential FMA chain per chunk, chunks added in order.",
	)
	MOVQ(paramAddr("x"), RAX)
	MOVQ(paramAddr("y"), RBX)
	MOVQ(paramAddr("n"), RCX)
	MOVQ(paramAddr("kc"), RDX)
	VXORPS(X0, X0, X0)
	TESTQ(RCX, RCX)
	JZ(LabelRef("dcdone"))

	Label("dcchunk")
	MOVQ(RDX, RSI)
	CMPQ(RSI, RCX)
	CMOVQGT(RCX, RSI)
	SUBQ(RSI, RCX)
	VXORPS(X1, X1, X1)

	Label("dcloop")
	VMOVSS(Mem{Base: RAX}, X2)
	VFMADD231SS(Mem{Base: RBX}, X2, X1)
	ADDQ(Imm(4), RAX)
	ADDQ(Imm(4), RBX)
	DECQ(RSI)
	JNZ(LabelRef("dcloop"))
	VADDSS(X1, X0, X0)
	TESTQ(RCX, RCX)
	JNZ(LabelRef("dcchunk"))

	Label("dcdone")
	ret, err := ReturnIndex(0).Resolve()
	if err != nil {
		panic(err)
	}
	VMOVSS(X0, ret.Addr)
	RET()
}

// zacc returns kern6x32's chunk accumulator of row r, half h (columns
// 16h…16h+15); ztot the running total of the chunks.
func zacc(r, h int) VecPhysical {
	return []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11}[2*r+h]
}
func ztot(r, h int) VecPhysical {
	return []VecPhysical{Z12, Z13, Z14, Z15, Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23}[2*r+h]
}

func kern6x32() {
	TEXT("kern6x32", NOSPLIT, "func(n, k, kc int, a *float32, sai, sak int, b *float32, ldb int, c *float32, ldc int, mode int, p, dv *float32)")
	Pragma("noescape")
	Doc(
		"kern6x32 computes rows [0, 6) and columns [0, n) of C = op(A·B) (see",
		"tile.go) with k split into chunks of kc, as gemmChunked does: each chunk",
		"is a sequential FMA chain from zero, the chunks are added in order, and",
		"mode (tileSet, tileAdd or tileDS) applies to the sum; tileAdd adds C",
		"to the first chunk, as gemmChunked's first call does. n is a positive",
		"multiple of 32, k and kc are positive, a, c (and p, dv in tileDS mode)",
		"point at the block's first row.",
	)
	// Registers: AX a (running), BX b (running), CX steps left in the
	// chunk, DX sai·4, SI 3·sai·4, DI 5·sai·4, R8 sak·4, R9 ldb·4, R10 C
	// block, R11 columns left, R12 a base, R13 b column base, R14 k left,
	// R15 kc.
	loadTileArgs()
	MOVQ(paramAddr("kc"), R15)

	// chunkLen sets CX to the next chunk's length and counts it off R14.
	chunkLen := func() {
		MOVQ(R15, RCX)
		CMPQ(RCX, R14)
		CMOVQGT(R14, RCX)
		SUBQ(RCX, R14)
	}
	// kloop emits a chunk's FMA chains into the registers of acc.
	kloop := func(label string, acc func(r, h int) VecPhysical) {
		for r := 0; r < 6; r++ {
			for h := 0; h < 2; h++ {
				VXORPS(acc(r, h), acc(r, h), acc(r, h))
			}
		}
		Label(label)
		VMOVUPS(Mem{Base: RBX}, Z24)
		VMOVUPS(Mem{Base: RBX, Disp: 64}, Z25)
		for r := 0; r < 6; r++ {
			bc := []VecPhysical{Z26, Z27}[r%2]
			VBROADCASTSS(rowA(r), bc)
			VFMADD231PS(Z24, bc, acc(r, 0))
			VFMADD231PS(Z25, bc, acc(r, 1))
		}
		ADDQ(R8, RAX)
		ADDQ(R9, RBX)
		DECQ(RCX)
		JNZ(LabelRef(label))
	}

	Label("zcolblock")
	MOVQ(R12, RAX)
	MOVQ(R13, RBX)
	MOVQ(paramAddr("k"), R14)
	// The first chunk goes straight into the totals.
	chunkLen()
	kloop("zfirst", ztot)
	MOVQ(paramAddr("mode"), RCX)
	CMPQ(RCX, Imm(tileAdd))
	JNE(LabelRef("zchunks"))
	Comment("tileAdd: total = first chunk + C.")
	byteStride("ldc", RCX)
	MOVQ(R10, RBX)
	for r := 0; r < 6; r++ {
		VADDPS(Mem{Base: RBX}, ztot(r, 0), ztot(r, 0))
		VADDPS(Mem{Base: RBX, Disp: 64}, ztot(r, 1), ztot(r, 1))
		if r < 5 {
			ADDQ(RCX, RBX)
		}
	}
	// BX walked C: set it back to B's position after the first chunk.
	MOVQ(paramAddr("kc"), RBX)
	CMPQ(RBX, paramAddr("k"))
	CMOVQGT(paramAddr("k"), RBX)
	IMULQ(R9, RBX)
	ADDQ(R13, RBX)

	Label("zchunks")
	TESTQ(R14, R14)
	JZ(LabelRef("zepilogue"))
	chunkLen()
	kloop("zkloop", zacc)
	for r := 0; r < 6; r++ {
		for h := 0; h < 2; h++ {
			VADDPS(zacc(r, h), ztot(r, h), ztot(r, h))
		}
	}
	JMP(LabelRef("zchunks"))

	Label("zepilogue")
	Comment("BX walks the rows of the C block, CX is ldc·4.")
	byteStride("ldc", RCX)
	MOVQ(R10, RBX)
	MOVQ(paramAddr("mode"), RAX)
	CMPQ(RAX, Imm(tileDS))
	JEQ(LabelRef("zdsmode"))
	for r := 0; r < 6; r++ {
		VMOVUPS(ztot(r, 0), Mem{Base: RBX})
		VMOVUPS(ztot(r, 1), Mem{Base: RBX, Disp: 64})
		if r < 5 {
			ADDQ(RCX, RBX)
		}
	}
	JMP(LabelRef("znext"))

	Label("zdsmode")
	Comment("C = P ∘ (total − dv[row]); AX walks P like BX walks C.")
	subDV(ztot, []VecPhysical{Z24, Z25, Z26, Z27})
	MOVQ(paramAddr("p"), RAX)
	ADDQ(R10, RAX)
	SUBQ(paramAddr("c"), RAX)
	for r := 0; r < 6; r++ {
		VMULPS(Mem{Base: RAX}, ztot(r, 0), ztot(r, 0))
		VMULPS(Mem{Base: RAX, Disp: 64}, ztot(r, 1), ztot(r, 1))
		VMOVUPS(ztot(r, 0), Mem{Base: RBX})
		VMOVUPS(ztot(r, 1), Mem{Base: RBX, Disp: 64})
		if r < 5 {
			ADDQ(RCX, RBX)
			ADDQ(RCX, RAX)
		}
	}

	Label("znext")
	ADDQ(Imm(128), R10)
	ADDQ(Imm(128), R13)
	SUBQ(Imm(32), R11)
	JNZ(LabelRef("zcolblock"))
	VZEROUPPER()
	RET()
}

func dotChain8() {
	TEXT("dotChain8", NOSPLIT, "func(x *float32, sx int, y *float32, sy int, n, kc int, out *[8]float32)")
	Pragma("noescape")
	Doc(
		"dotChain8 sets out[r] to dotChain(x + r·sx, y + r·sy, n, kc) for r < 8",
		"(strides in elements), bit for bit: the eight chains run side by side,",
		"so neither the FMA latency that bounds one chain nor a single FMA",
		"port bounds them. n must be positive.",
	)
	// Registers: AX x, BX y (both running), CX, DX, SI, DI 1, 3, 5 and 7
	// times sx·4, R8–R11 the same for sy, R12 k left, R13 kc, R14 steps
	// left in the chunk, R15 out, whose elements hold the running totals
	// (sixteen XMM registers hold the chunk sums and the loaded x values).
	MOVQ(paramAddr("x"), RAX)
	MOVQ(paramAddr("y"), RBX)
	strides := func(name string, r1, r3, r5, r7 Register) {
		byteStride(name, r1)
		LEAQ(Mem{Base: r1, Index: r1, Scale: 2}, r3)
		LEAQ(Mem{Base: r1, Index: r1, Scale: 4}, r5)
		LEAQ(Mem{Base: r3, Index: r1, Scale: 4}, r7)
	}
	strides("sx", RCX, RDX, RSI, RDI)
	strides("sy", R8, R9, R10, R11)
	// row r of the operand at base, with 1, 3, 5, 7 times its stride in s.
	row := func(base Register, s [4]Register, r int) Mem {
		return []Mem{
			{Base: base},
			{Base: base, Index: s[0], Scale: 1},
			{Base: base, Index: s[0], Scale: 2},
			{Base: base, Index: s[1], Scale: 1},
			{Base: base, Index: s[0], Scale: 4},
			{Base: base, Index: s[2], Scale: 1},
			{Base: base, Index: s[1], Scale: 2},
			{Base: base, Index: s[3], Scale: 1},
		}[r]
	}
	xs := [4]Register{RCX, RDX, RSI, RDI}
	ys := [4]Register{R8, R9, R10, R11}
	MOVQ(paramAddr("n"), R12)
	MOVQ(paramAddr("kc"), R13)
	MOVQ(paramAddr("out"), R15)
	chunk := []VecPhysical{X0, X1, X2, X3, X4, X5, X6, X7}
	tmp := []VecPhysical{X8, X9, X10, X11, X12, X13, X14, X15}
	VXORPS(X0, X0, X0)
	VMOVUPS(X0, Mem{Base: R15})
	VMOVUPS(X0, Mem{Base: R15, Disp: 16})

	Label("dc8chunk")
	MOVQ(R13, R14)
	CMPQ(R14, R12)
	CMOVQGT(R12, R14)
	SUBQ(R14, R12)
	for _, c := range chunk {
		VXORPS(c, c, c)
	}

	Label("dc8loop")
	for r := 0; r < 8; r++ {
		VMOVSS(row(RAX, xs, r), tmp[r])
		VFMADD231SS(row(RBX, ys, r), tmp[r], chunk[r])
	}
	ADDQ(Imm(4), RAX)
	ADDQ(Imm(4), RBX)
	DECQ(R14)
	JNZ(LabelRef("dc8loop"))
	Comment("total += chunk, in out")
	for r := 0; r < 8; r++ {
		VADDSS(Mem{Base: R15, Disp: 4 * r}, chunk[r], chunk[r])
		VMOVSS(chunk[r], Mem{Base: R15, Disp: 4 * r})
	}
	TESTQ(R12, R12)
	JNZ(LabelRef("dc8chunk"))
	RET()
}

func scaleRows() {
	TEXT("scaleRows", NOSPLIT, "func(dst *float32, ldd int, src *float32, lds int, rows, n8 int, s *float32, ss int)")
	Pragma("noescape")
	Doc(
		"scaleRows sets dst[r·ldd + j] = s[r·ss]·src[r·lds + j] for r < rows and",
		"j < 8·n8 (strides in elements; ss = 0 scales every row by s[0]): one",
		"rounding per element, as scaleTo. rows and n8 must be positive.",
	)
	// Registers: AX dst row, BX src row, CX rows left, DX ldd·4, SI lds·4,
	// DI scale pointer, R8 ss·4, R9 column groups left, R10/R11 running
	// pointers.
	MOVQ(paramAddr("dst"), RAX)
	byteStride("ldd", RDX)
	MOVQ(paramAddr("src"), RBX)
	byteStride("lds", RSI)
	MOVQ(paramAddr("rows"), RCX)
	MOVQ(paramAddr("s"), RDI)
	byteStride("ss", R8)

	Label("srrow")
	VBROADCASTSS(Mem{Base: RDI}, Y0)
	MOVQ(RAX, R10)
	MOVQ(RBX, R11)
	MOVQ(paramAddr("n8"), R9)
	CMPQ(R9, Imm(4))
	JLT(LabelRef("srone"))

	Label("srfour")
	for u := 0; u < 4; u++ {
		VMULPS(Mem{Base: R11, Disp: 32 * u}, Y0, []VecPhysical{Y1, Y2, Y3, Y4}[u])
	}
	for u := 0; u < 4; u++ {
		VMOVUPS([]VecPhysical{Y1, Y2, Y3, Y4}[u], Mem{Base: R10, Disp: 32 * u})
	}
	ADDQ(Imm(128), R10)
	ADDQ(Imm(128), R11)
	SUBQ(Imm(4), R9)
	CMPQ(R9, Imm(4))
	JGE(LabelRef("srfour"))
	TESTQ(R9, R9)
	JZ(LabelRef("srnext"))

	Label("srone")
	VMULPS(Mem{Base: R11}, Y0, Y1)
	VMOVUPS(Y1, Mem{Base: R10})
	ADDQ(Imm(32), R10)
	ADDQ(Imm(32), R11)
	DECQ(R9)
	JNZ(LabelRef("srone"))

	Label("srnext")
	ADDQ(RDX, RAX)
	ADDQ(RSI, RBX)
	ADDQ(R8, RDI)
	DECQ(RCX)
	JNZ(LabelRef("srrow"))
	VZEROUPPER()
	RET()
}

func transpose8() {
	TEXT("transpose8", NOSPLIT, "func(dst *float32, ldd int, src *float32, lds int, nb, db int, s float32)")
	Pragma("noescape")
	Doc(
		"transpose8 sets dst[x·ldd + c] = s·src[c·lds + x] for c < 8·nb and",
		"x < 8·db (strides in elements), one rounding per element as",
		"transposeRows: 8×8 blocks, transposed in registers. nb and db must be",
		"positive.",
	)
	// Registers: AX src block row, BX dst block column, CX row blocks
	// left, DX lds·4, SI ldd·4, R8 column blocks left, R9 src pointer, R10
	// dst pointer, R13, R11 and R12 3, 5 and 7 times the stride of the
	// rows being loaded or stored, Y15 the scale.
	MOVQ(paramAddr("src"), RAX)
	MOVQ(paramAddr("dst"), RBX)
	byteStride("lds", RDX)
	byteStride("ldd", RSI)
	MOVQ(paramAddr("nb"), RCX)
	VBROADCASTSS(paramAddr("s"), Y15)
	r := []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7}
	t := []VecPhysical{Y8, Y9, Y10, Y11, Y12, Y13, Y14}
	// row addresses base + i·stride for i < 8 with stride in st, 3·st in
	// R13, 5·st in R11, 7·st in R12.
	rowAt := func(base, st Register, i int) Mem {
		switch i {
		case 0:
			return Mem{Base: base}
		case 1, 2, 4:
			return Mem{Base: base, Index: st, Scale: uint8(i)}
		case 3:
			return Mem{Base: base, Index: R13, Scale: 1}
		case 5:
			return Mem{Base: base, Index: R11, Scale: 1}
		case 6:
			return Mem{Base: base, Index: R13, Scale: 2}
		default:
			return Mem{Base: base, Index: R12, Scale: 1}
		}
	}
	multiples := func(st Register) {
		LEAQ(Mem{Base: st, Index: st, Scale: 2}, R13)
		LEAQ(Mem{Base: st, Index: st, Scale: 4}, R11)
		LEAQ(Mem{Base: R13, Index: st, Scale: 4}, R12)
	}

	Label("trrow")
	MOVQ(RAX, R9)
	MOVQ(RBX, R10)
	MOVQ(paramAddr("db"), R8)

	Label("trcol")
	multiples(RDX)
	for i := 0; i < 8; i++ {
		VMULPS(rowAt(R9, RDX, i), Y15, r[i])
	}
	// r[i] holds row i of the block (scaled). Pairs of rows, interleaved:
	// t[2i] = unpcklps(r[2i], r[2i+1]), t[2i+1] the high halves; the last
	// high half goes into r7 (one instruction reads r6 and r7 first).
	for i := 0; i < 3; i++ {
		VUNPCKLPS(r[2*i+1], r[2*i], t[2*i])
		VUNPCKHPS(r[2*i+1], r[2*i], t[2*i+1])
	}
	VUNPCKLPS(r[7], r[6], t[6])
	VUNPCKHPS(r[7], r[6], r[7])
	// Groups of four rows: u[i] (in r[i]) holds column i of rows 0–3 in
	// its low lane and column i+4 in its high lane, u[i+4] the same for
	// rows 4–7.
	VSHUFPS(Imm(0x44), t[2], t[0], r[0])
	VSHUFPS(Imm(0xEE), t[2], t[0], r[1])
	VSHUFPS(Imm(0x44), t[3], t[1], r[2])
	VSHUFPS(Imm(0xEE), t[3], t[1], r[3])
	VSHUFPS(Imm(0x44), t[6], t[4], r[4])
	VSHUFPS(Imm(0xEE), t[6], t[4], r[5])
	VSHUFPS(Imm(0x44), r[7], t[5], r[6])
	VSHUFPS(Imm(0xEE), r[7], t[5], r[7])
	// Column i is the low lanes of u[i] and u[i+4], column i+4 the highs.
	for i := 0; i < 4; i++ {
		VPERM2F128(Imm(0x20), r[i+4], r[i], t[i])
		VPERM2F128(Imm(0x31), r[i+4], r[i], r[i+4])
	}
	multiples(RSI)
	for i := 0; i < 4; i++ {
		VMOVUPS(t[i], rowAt(R10, RSI, i))
	}
	for i := 4; i < 8; i++ {
		VMOVUPS(r[i], rowAt(R10, RSI, i))
	}
	ADDQ(Imm(32), R9)                               // next 8 columns of src
	LEAQ(Mem{Base: R10, Index: RSI, Scale: 8}, R10) // next 8 rows of dst
	DECQ(R8)
	JNZ(LabelRef("trcol"))

	LEAQ(Mem{Base: RAX, Index: RDX, Scale: 8}, RAX) // next 8 rows of src
	ADDQ(Imm(32), RBX)                              // next 8 columns of dst
	DECQ(RCX)
	JNZ(LabelRef("trrow"))
	VZEROUPPER()
	RET()
}
