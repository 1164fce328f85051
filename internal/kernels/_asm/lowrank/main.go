// Command lowrank generates the AVX-512 kernels of internal/kernels'
// low-rank products (lowrank_amd64.s, and their Go declarations in
// lowrank_amd64_stubs.go):
//
//	cd internal/kernels/_asm && go run ./lowrank -out ../lowrank_amd64.s -stubs ../lowrank_amd64_stubs.go -pkg kernels
//
// They are the products of a rank-8 adapter with a large activation X
// (rows × n, row-major) that the packed SGEMM pays a full copy of X for:
// eight dot products per row of X (dot), eight rows of sums over the rows of
// X (outer), and eight-term combinations of eight rows written per row of
// the output (expand). Each reads X where it lies, and each has a form that
// applies an inverted-dropout bit mask as it loads or stores: the 16 mask
// bits of 16 elements are one opmask register, so a dropped element costs
// nothing and the masked X is never stored.
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("amd64,!purego")
	for _, masked := range []bool{false, true} {
		dot(masked)
		outer(masked, 1)
		outer(masked, 2)
	}
	expand(false, true)
	expand(true, false)
	expand(true, true)
	Generate()
}

func suffix(masked bool) string {
	if masked {
		return "Mask"
	}
	return ""
}

// maskArgs loads the mask pointer and its row stride (in 16-bit words,
// converted to bytes) when masked.
func maskArgs(masked bool, m, ms GPPhysical) {
	if !masked {
		return
	}
	Load(Param("mask"), m)
	Load(Param("mstride"), ms)
	SHLQ(Imm(1), ms)
}

// dot emits lowRankDot8[Mask]AVX512: for each of rows rows of X,
// c[i·8+j] = Σ_p ap[p/16][j][p%16]·X[i][p] (masked: X[i][p] taken as 0
// where its bit is clear) over kc chunks of 16 p, A packed by chunks
// (ap[chunk][j] is 16 floats).
func dot(masked bool) {
	name := "lowRankDot8" + suffix(masked) + "AVX512"
	sig := "func(rows, kc int, ap *float32, x *float32, ldx int, c *float32)"
	if masked {
		sig = "func(rows, kc int, ap *float32, x *float32, ldx int, c *float32, mask *uint16, mstride int)"
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(
		name+" computes c[i·8+j] = Σ_p A[j][p]·X[i][p] for i < rows, j < 8 and",
		"p < 16·kc: A packed in chunks of 16 p (the 16 values of row j at",
		"ap[(chunk·8+j)·16]), X row-major with stride ldx; rows, kc > 0.",
		"With a mask, X[i][p] counts as 0 where bit p%16 of the 16-bit word",
		"mask[i·mstride + p/16] is clear.",
	)
	rows, kc, ap, x, ldx, c := RAX, RBX, RSI, RDI, R8, R9
	m, ms := R10, R11
	Load(Param("rows"), rows)
	Load(Param("kc"), kc)
	Load(Param("ap"), ap)
	Load(Param("x"), x)
	Load(Param("ldx"), ldx)
	SHLQ(Imm(2), ldx)
	Load(Param("c"), c)
	maskArgs(masked, m, ms)
	xp, a, mp, n := R12, R13, R14, R15
	acc := []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7}
	xv := Z8

	Label("row")
	for _, z := range acc {
		VPXORD(z, z, z)
	}
	MOVQ(x, xp)
	MOVQ(ap, a)
	MOVQ(kc, n)
	if masked {
		MOVQ(m, mp)
	}
	Label("chunk")
	if masked {
		KMOVW(Mem{Base: mp}, K1)
		VMOVUPS_Z(Mem{Base: xp}, K1, xv)
		ADDQ(Imm(2), mp)
	} else {
		VMOVUPS(Mem{Base: xp}, xv)
	}
	for j, z := range acc {
		VFMADD231PS(Mem{Base: a, Disp: 64 * j}, xv, z)
	}
	ADDQ(Imm(64), xp)
	ADDQ(U32(64*8), a)
	DECQ(n)
	JNZ(LabelRef("chunk"))

	// Eight sums of sixteen lanes into one YMM of eight: fold each
	// accumulator to 256 bits, then add pairs horizontally (within each
	// 128-bit half) twice and the two halves.
	for j, z := range acc {
		VEXTRACTF32X8(Imm(1), z, Y8)
		VADDPS(Y8, z.AsY(), acc[j].AsY())
	}
	VHADDPS(Y1, Y0, Y0) // 128-bit halves: [0 0 1 1 | 0 0 1 1]
	VHADDPS(Y3, Y2, Y2)
	VHADDPS(Y5, Y4, Y4)
	VHADDPS(Y7, Y6, Y6)
	VHADDPS(Y2, Y0, Y0)               // [0 1 2 3 | 0 1 2 3]
	VHADDPS(Y6, Y4, Y4)               // [4 5 6 7 | 4 5 6 7]
	VPERM2F128(Imm(0x20), Y4, Y0, Y1) // [0 1 2 3 (lo of Y0) | 4 5 6 7 (lo of Y4)]
	VPERM2F128(Imm(0x31), Y4, Y0, Y2) // the high halves
	VADDPS(Y2, Y1, Y1)
	VMOVUPS(Y1, Mem{Base: c})
	ADDQ(Imm(32), c)
	ADDQ(ldx, x)
	if masked {
		ADDQ(ms, m)
	}
	DECQ(rows)
	JNZ(LabelRef("row"))
	VZEROUPPER()
	RET()
}

// outer emits lowRankOuter8x{16·w}[Mask]AVX512: the 8×16w block
// c[j][q] = Σ_i h[i·8+j]·X[i][q] (q < 16w) over rows rows of X. Two chunks
// (w = 2) read 128 contiguous bytes of each row, the pair of lines the
// adjacent-line prefetcher fetches together, which matters when X is cold
// (a layer input saved since the forward pass).
func outer(masked bool, w int) {
	cols := 16 * w
	name := fmt.Sprintf("lowRankOuter8x%d%sAVX512", cols, suffix(masked))
	sig := "func(rows int, h *float32, x *float32, ldx int, c *float32, ldc int)"
	if masked {
		sig = "func(rows int, h *float32, x *float32, ldx int, c *float32, ldc int, mask *uint16, mstride int)"
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(
		fmt.Sprintf("%s computes c[j·ldc+q] = Σ_i h[i·8+j]·X[i][q] for j < 8 and", name),
		fmt.Sprintf("q < %d over i < rows (> 0), X row-major with stride ldx. With a mask,", cols),
		"X[i][q] counts as 0 where bit q%16 of the 16-bit word mask[i·mstride+q/16]",
		"is clear.",
	)
	rows, h, x, ldx, c, ldc := RAX, RBX, RSI, RDI, R8, R9
	m, ms := R10, R11
	Load(Param("rows"), rows)
	Load(Param("h"), h)
	Load(Param("x"), x)
	Load(Param("ldx"), ldx)
	SHLQ(Imm(2), ldx)
	Load(Param("c"), c)
	Load(Param("ldc"), ldc)
	SHLQ(Imm(2), ldc)
	maskArgs(masked, m, ms)
	// acc[j·w+u]: row j of c, chunk u.
	acc := []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15}[:8*w]
	xv := []VecPhysical{Z16, Z17}[:w]
	ks := []OpmaskPhysical{K1, K2}
	bc := Z18
	for _, z := range acc {
		VPXORD(z, z, z)
	}
	Label("row")
	for u := range w {
		if masked {
			KMOVW(Mem{Base: m, Disp: 2 * u}, ks[u])
			VMOVUPS_Z(Mem{Base: x, Disp: 64 * u}, ks[u], xv[u])
		} else {
			VMOVUPS(Mem{Base: x, Disp: 64 * u}, xv[u])
		}
	}
	if masked {
		ADDQ(ms, m)
	}
	for j := range 8 {
		if w == 1 {
			VFMADD231PS_BCST(Mem{Base: h, Disp: 4 * j}, xv[0], acc[j])
			continue
		}
		VBROADCASTSS(Mem{Base: h, Disp: 4 * j}, bc)
		for u := range w {
			VFMADD231PS(bc, xv[u], acc[j*w+u])
		}
	}
	ADDQ(Imm(32), h)
	ADDQ(ldx, x)
	DECQ(rows)
	JNZ(LabelRef("row"))
	for j := range 8 {
		for u := range w {
			VMOVUPS(acc[j*w+u], Mem{Base: c, Disp: 64 * u})
		}
		ADDQ(ldc, c)
	}
	VZEROUPPER()
	RET()
}

// expand emits lowRankExpand8[Mask|Acc]AVX512: for each of rows rows,
// c[i][q] = alpha·Σ_j h[i·8+j]·A[j][q] (q < 16·nc), masked (0 where the bit
// is clear) or added onto c.
func expand(masked, acc bool) {
	name := "lowRankExpand8" + suffix(masked)
	if acc {
		name += "Acc"
	}
	name += "AVX512"
	sig := "func(rows, nc int, h *float32, a *float32, lda int, c *float32, ldc int, alpha float32)"
	if masked {
		sig = "func(rows, nc int, h *float32, a *float32, lda int, c *float32, ldc int, alpha float32, mask *uint16, mstride int)"
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	what := "c[i][q] = alpha·Σ_j h[i·8+j]·A[j][q]"
	if acc {
		what = "c[i][q] += alpha·Σ_j h[i·8+j]·A[j][q]"
	}
	doc := []string{
		fmt.Sprintf("%s sets %s", name, what),
		"for i < rows and q < 16·nc (both > 0), A and c row-major with strides",
		"lda and ldc.",
	}
	switch {
	case masked && acc:
		doc = append(doc, "+0 is added instead where bit q%16 of the 16-bit word",
			"mask[i·mstride + q/16] is clear.")
	case masked:
		doc = append(doc, "c[i][q] is +0 instead where bit q%16 of the 16-bit word",
			"mask[i·mstride + q/16] is clear.")
	}
	Doc(doc...)
	rows, h, a, lda, c, ldc := RAX, RSI, RDI, R8, R9, R10
	m, ms := R11, R12
	Load(Param("rows"), rows)
	Load(Param("h"), h)
	Load(Param("a"), a)
	Load(Param("lda"), lda)
	SHLQ(Imm(2), lda)
	Load(Param("c"), c)
	Load(Param("ldc"), ldc)
	SHLQ(Imm(2), ldc)
	maskArgs(masked, m, ms)
	alpha := Z17
	al, err := Param("alpha").Resolve()
	if err != nil {
		panic(err)
	}
	VBROADCASTSS(al.Addr, alpha)
	// Rows j of A: a, a+lda, a+2·lda, a+4·lda from a; 3, 5, 7 from
	// a+3·lda; 6 from a+2·lda.
	a2, a3 := R13, R14
	ap, cp, mp, n := R15, RDX, RCX, RBX
	bc := []VecPhysical{Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15}
	sum := Z16

	Label("row")
	for j, z := range bc {
		VBROADCASTSS(Mem{Base: h, Disp: 4 * j}, z)
	}
	MOVQ(a, ap)
	MOVQ(c, cp)
	Load(Param("nc"), n)
	if masked {
		MOVQ(m, mp)
	}
	Label("chunk")
	LEAQ(Mem{Base: ap, Index: lda, Scale: 2}, a2)
	LEAQ(Mem{Base: a2, Index: lda, Scale: 1}, a3)
	rowMem := []Mem{
		{Base: ap}, {Base: ap, Index: lda, Scale: 1}, {Base: a2}, {Base: a3},
		{Base: ap, Index: lda, Scale: 4}, {Base: a3, Index: lda, Scale: 2},
		{Base: a2, Index: lda, Scale: 4}, {Base: a3, Index: lda, Scale: 4},
	}
	VMULPS(rowMem[0], bc[0], sum)
	for j := 1; j < 8; j++ {
		VFMADD231PS(rowMem[j], bc[j], sum)
	}
	switch {
	case masked:
		KMOVW(Mem{Base: mp}, K1)
		VMULPS_Z(sum, alpha, K1, sum)
		ADDQ(Imm(2), mp)
		if acc {
			VADDPS(Mem{Base: cp}, sum, sum)
		}
	case acc:
		VFMADD213PS(Mem{Base: cp}, alpha, sum) // sum = alpha·sum + c
	default:
		VMULPS(sum, alpha, sum)
	}
	VMOVUPS(sum, Mem{Base: cp})
	ADDQ(Imm(64), ap)
	ADDQ(Imm(64), cp)
	DECQ(n)
	JNZ(LabelRef("chunk"))
	ADDQ(Imm(32), h)
	ADDQ(ldc, c)
	if masked {
		ADDQ(ms, m)
	}
	DECQ(rows)
	JNZ(LabelRef("row"))
	VZEROUPPER()
	RET()
}
