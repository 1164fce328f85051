// Command mask generates the AVX-512 kernel of internal/kernels' MaskScale
// (mask_amd64.s, and its Go declaration in mask_amd64_stubs.go):
//
//	cd internal/kernels/_asm && go run ./mask -out ../mask_amd64.s -stubs ../mask_amd64_stubs.go -pkg kernels
//
// Sixteen elements take one 16-bit opmask load and one zero-masking
// multiply: dst = k·src where the bit is set and +0 where it is clear, with
// no per-element shifting and selecting, which the scalar Go loop spends
// several instructions on.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("amd64,!purego")
	TEXT("maskScaleAVX512", NOSPLIT, "func(n int, dst, src *float32, mask *uint16, k float32)")
	Pragma("noescape")
	Doc(
		"maskScaleAVX512 sets dst[i] = k·src[i] where bit i%16 of mask[i/16] is",
		"set and dst[i] = +0 where it is clear, for i < n; n must be a positive",
		"multiple of 16. dst and src may be the same.",
	)
	n, dst, src, mask := GP64(), GP64(), GP64(), GP64()
	Load(Param("n"), n)
	Load(Param("dst"), dst)
	Load(Param("src"), src)
	Load(Param("mask"), mask)
	kv, t := ZMM(), ZMM()
	b, err := Param("k").Resolve()
	if err != nil {
		panic(err)
	}
	VBROADCASTSS(b.Addr, kv)
	i, w := GP64(), GP64()
	XORQ(i, i)
	Label("loop")
	MOVQ(i, w)
	SHRQ(Imm(3), w) // byte offset of mask word i/16: i/16·2
	KMOVW(Mem{Base: mask, Index: w, Scale: 1}, K1)
	VMULPS_Z(Mem{Base: src, Index: i, Scale: 4}, kv, K1, t)
	VMOVUPS(t, Mem{Base: dst, Index: i, Scale: 4})
	ADDQ(Imm(16), i)
	CMPQ(i, n)
	JL(LabelRef("loop"))
	VZEROUPPER()
	RET()
	Generate()
}
