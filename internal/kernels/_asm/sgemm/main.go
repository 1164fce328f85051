// Command sgemm generates the AVX2/FMA assembly of the float32 GEMM in
// internal/kernels: the 6×16 micro-kernel and the packing routines
// (sgemm_amd64.s, and their Go declarations in sgemm_amd64_stubs.go):
//
//	cd internal/kernels/_asm && go run ./sgemm -out ../sgemm_amd64.s -stubs ../sgemm_amd64_stubs.go -pkg kernels
//
// The layout of the packed operands is defined by the Go driver
// (internal/kernels/sgemm_pack.go): an A micro-panel holds 6 rows, stored
// k-major (6 consecutive floats per k step); a B micro-panel holds 16
// columns, stored k-major (16 consecutive floats per k step). The kernel
// keeps the 6×16 tile of C in 12 YMM accumulators (two per row), so each k
// step is two B loads, six broadcasts of A and twelve FMAs: 15 of the 16 YMM
// registers.
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
	packA6()
	packBT16()
	copyPanels("sgemmPackBNAVX2", 16, 4)
	copyPanels("sgemmPackATAVX2", 6, 8)
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

// transpose8 transposes the 8×8 block held in rows (eight YMM registers,
// element j of rows[i] is (i, j)) and returns the registers holding its
// columns; it clobbers rows. rows[6] and rows[7] may be nil when the caller
// needs only the first six elements of each column.
func transpose8(rows []VecVirtual) []VecVirtual {
	r := rows
	if r[6] == nil {
		r = append(r[:6:6], r[4], r[5]) // lanes 6 and 7 of the result: don't care
	}
	t := make([]VecVirtual, 8)
	for i := 0; i < 8; i += 2 {
		t[i], t[i+1] = YMM(), YMM()
		VUNPCKLPS(r[i+1], r[i], t[i])   // r_i0 r_(i+1)0 r_i1 r_(i+1)1 | …4 …5
		VUNPCKHPS(r[i+1], r[i], t[i+1]) // r_i2 r_(i+1)2 r_i3 r_(i+1)3 | …6 …7
	}
	s := make([]VecVirtual, 8)
	for h := 0; h < 2; h++ { // rows 0–3, rows 4–7
		a, b := t[4*h], t[4*h+2]
		c, d := t[4*h+1], t[4*h+3]
		s[4*h+0], s[4*h+1], s[4*h+2], s[4*h+3] = YMM(), YMM(), YMM(), YMM()
		VSHUFPS(Imm(0x44), b, a, s[4*h+0]) // column 0 (and 4), four rows
		VSHUFPS(Imm(0xEE), b, a, s[4*h+1]) // column 1 (and 5)
		VSHUFPS(Imm(0x44), d, c, s[4*h+2]) // column 2 (and 6)
		VSHUFPS(Imm(0xEE), d, c, s[4*h+3]) // column 3 (and 7)
	}
	out := make([]VecVirtual, 8)
	for j := 0; j < 4; j++ {
		out[j], out[j+4] = YMM(), YMM()
		VPERM2F128(Imm(0x20), s[4+j], s[j], out[j])
		VPERM2F128(Imm(0x31), s[4+j], s[j], out[j+4])
	}
	return out
}

// packA6 packs six rows of A (not transposed) into an A micro-panel, eight
// k steps at a time: an 8×8 transpose (two rows unused) turns the six row
// vectors into eight 6-float k steps.
func packA6() {
	TEXT("sgemmPackA6AVX2", NOSPLIT, "func(k8 int, src *float32, lda int, dst *float32)")
	Pragma("noescape")
	Doc(
		"sgemmPackA6AVX2 sets dst[p·6+r] = src[r·lda+p] for r < 6, p < 8·k8.",
		"k8 must be positive.",
	)
	n, src, lda, dst := GP64(), GP64(), GP64(), GP64()
	Load(Param("k8"), n)
	MOVQ(paramAddr("src"), src)
	Load(Param("lda"), lda)
	MOVQ(paramAddr("dst"), dst)
	SHLQ(Imm(2), lda)
	lda3, src4 := GP64(), GP64()
	LEAQ(Mem{Base: lda, Index: lda, Scale: 2}, lda3)
	LEAQ(Mem{Base: src, Index: lda, Scale: 4}, src4)

	Label("packA6loop")
	rows := make([]VecVirtual, 8)
	for r := 0; r < 6; r++ {
		rows[r] = YMM()
	}
	VMOVUPS(Mem{Base: src}, rows[0])
	VMOVUPS(Mem{Base: src, Index: lda, Scale: 1}, rows[1])
	VMOVUPS(Mem{Base: src, Index: lda, Scale: 2}, rows[2])
	VMOVUPS(Mem{Base: src, Index: lda3, Scale: 1}, rows[3])
	VMOVUPS(Mem{Base: src4}, rows[4])
	VMOVUPS(Mem{Base: src4, Index: lda, Scale: 1}, rows[5])
	cols := transpose8(rows)
	// Each k step is 24 bytes: full 32-byte stores in increasing order
	// overlap harmlessly, except the last, which must not write past
	// this block (the next panel may belong to another thread).
	for j := 0; j < 7; j++ {
		VMOVUPS(cols[j], Mem{Base: dst, Disp: 24 * j})
	}
	VMOVUPS(cols[7].AsX(), Mem{Base: dst, Disp: 24 * 7})
	hi := XMM()
	VEXTRACTF128(Imm(1), cols[7], hi)
	VMOVQ(hi, Mem{Base: dst, Disp: 24*7 + 16})

	ADDQ(Imm(32), src)
	ADDQ(Imm(32), src4)
	ADDQ(U32(8*24), dst)
	DECQ(n)
	JNZ(LabelRef("packA6loop"))
	VZEROUPPER()
	RET()
}

// packBT16 packs 16 rows of a transposed B (column j of op(B) is row j of
// the stored matrix) into a B micro-panel, eight k steps at a time: two 8×8
// transposes.
func packBT16() {
	TEXT("sgemmPackBT16AVX2", NOSPLIT, "func(k8 int, src *float32, ldb int, dst *float32)")
	Pragma("noescape")
	Doc(
		"sgemmPackBT16AVX2 sets dst[p·16+j] = src[j·ldb+p] for j < 16, p < 8·k8.",
		"k8 must be positive.",
	)
	n, src, ldb, dst := GP64(), GP64(), GP64(), GP64()
	Load(Param("k8"), n)
	MOVQ(paramAddr("src"), src)
	Load(Param("ldb"), ldb)
	MOVQ(paramAddr("dst"), dst)
	SHLQ(Imm(2), ldb)
	ldb3 := GP64()
	LEAQ(Mem{Base: ldb, Index: ldb, Scale: 2}, ldb3)
	base := []GPVirtual{src, GP64(), GP64(), GP64()} // rows 0, 4, 8, 12
	for i := 1; i < 4; i++ {
		LEAQ(Mem{Base: base[i-1], Index: ldb, Scale: 4}, base[i])
	}

	Label("packBT16loop")
	for h := 0; h < 2; h++ {
		rows := make([]VecVirtual, 8)
		for r := 0; r < 8; r++ {
			rows[r] = YMM()
			b := base[2*h+r/4]
			m := Mem{Base: b}
			switch r % 4 {
			case 1:
				m.Index, m.Scale = ldb, 1
			case 2:
				m.Index, m.Scale = ldb, 2
			case 3:
				m.Index, m.Scale = ldb3, 1
			}
			VMOVUPS(m, rows[r])
		}
		cols := transpose8(rows)
		for j := 0; j < 8; j++ {
			VMOVUPS(cols[j], Mem{Base: dst, Disp: 64*j + 32*h})
		}
	}
	for _, b := range base {
		ADDQ(Imm(32), b)
	}
	ADDQ(U32(8*64), dst)
	DECQ(n)
	JNZ(LabelRef("packBT16loop"))
	VZEROUPPER()
	RET()
}

// copyPanels generates a routine that deals rows of a matrix to panels: the
// w floats at src + p·ld + q·w go to dst + q·stride + p·w, for p < rows
// (a multiple of pblock) and q < panels. This packs B when it is not
// transposed (w = 16) and A when it is (w = 6). It walks pblock rows at a
// time across all panels, so that the source lines, which may all fall in
// one L1 set when ld is a power of two, are used up before they are evicted.
func copyPanels(name string, w, pblock int) {
	TEXT(name, NOSPLIT, "func(rows, panels int, src *float32, ld int, dst *float32, stride int)")
	Pragma("noescape")
	Doc(
		fmt.Sprintf("%s sets dst[q·stride+p·%d+j] = src[p·ld+q·%d+j] for j < %d,", name, w, w, w),
		fmt.Sprintf("p < rows and q < panels. rows must be a positive multiple of %d and", pblock),
		"panels positive.",
	)
	rows, panels, src, ld, dst, stride := GP64(), GP64(), GP64(), GP64(), GP64(), GP64()
	Load(Param("rows"), rows)
	Load(Param("panels"), panels)
	MOVQ(paramAddr("src"), src)
	Load(Param("ld"), ld)
	MOVQ(paramAddr("dst"), dst)
	Load(Param("stride"), stride)
	SHLQ(Imm(2), ld)
	SHLQ(Imm(2), stride)
	ld3 := GP64()
	LEAQ(Mem{Base: ld, Index: ld, Scale: 2}, ld3)
	sq, sq4, dq, q := GP64(), GP64(), GP64(), GP64()

	Label(name + "rows")
	MOVQ(src, sq)
	LEAQ(Mem{Base: src, Index: ld, Scale: 4}, sq4)
	MOVQ(dst, dq)
	MOVQ(panels, q)
	Label(name + "panels")
	for i := 0; i < pblock; i++ {
		b := sq
		if i >= 4 {
			b = sq4
		}
		m := Mem{Base: b}
		switch i % 4 {
		case 1:
			m.Index, m.Scale = ld, 1
		case 2:
			m.Index, m.Scale = ld, 2
		case 3:
			m.Index, m.Scale = ld3, 1
		}
		d := Mem{Base: dq, Disp: i * w * 4}
		switch w {
		case 16:
			x, y := YMM(), YMM()
			VMOVUPS(m, x)
			VMOVUPS(m.Offset(32), y)
			VMOVUPS(x, d)
			VMOVUPS(y, d.Offset(32))
		case 6:
			x, y := XMM(), XMM()
			VMOVUPS(m, x)
			VMOVQ(m.Offset(16), y)
			VMOVUPS(x, d)
			VMOVQ(y, d.Offset(16))
		default:
			panic("unsupported width")
		}
	}
	ADDQ(Imm(uint64(w*4)), sq)
	ADDQ(Imm(uint64(w*4)), sq4)
	ADDQ(stride, dq)
	DECQ(q)
	JNZ(LabelRef(name + "panels"))

	if pblock == 8 {
		LEAQ(Mem{Base: src, Index: ld, Scale: 8}, src)
	} else {
		LEAQ(Mem{Base: src, Index: ld, Scale: uint8(pblock)}, src)
	}
	ADDQ(U32(pblock*w*4), dst)
	SUBQ(Imm(uint64(pblock)), rows)
	JNZ(LabelRef(name + "rows"))
	VZEROUPPER()
	RET()
}
