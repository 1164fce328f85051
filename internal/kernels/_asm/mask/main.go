// Command mask generates the AVX-512 kernels of internal/kernels' MaskScale
// and DropoutWords (mask_amd64.s, and their Go declarations in
// mask_amd64_stubs.go):
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
	dropoutWords()
	Generate()
}

// dropoutWords emits dropoutWordsAVX512, the vector form of DropoutWords:
// the splitmix64 hashes of sixteen counters in two ZMMs of eight 64-bit
// lanes (VPMULLQ), whose 32-bit words hold the 16-bit fields in element
// order, compared with the threshold by one VPCMPUW each: 64 mask bits
// without a per-element shift, compare and or.
func dropoutWords() {
	TEXT("dropoutWordsAVX512", NOSPLIT, "func(dst *uint64, n int, ctr uint64, thr uint64)")
	Pragma("noescape")
	Doc(
		"dropoutWordsAVX512 sets bit 4q+f of dst[w], for w < n (> 0), when the",
		"16-bit field f of splitmix64(ctr+16w+q) is at least thr (< 2¹⁶).",
	)
	iota := GLOBL("dropoutIota", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(8*i, U64(i))
	}
	dst, n, t := RDI, RCX, RBX
	Load(Param("dst"), dst)
	Load(Param("n"), n)
	lo, hi, step, golden, c1, c2, thr := Z0, Z1, Z3, Z4, Z5, Z6, Z7
	Load(Param("ctr"), t)
	VPBROADCASTQ(t, lo)
	VPADDQ(iota, lo, lo)
	MOVQ(U32(8), t)
	VPBROADCASTQ(t, step)
	VPADDQ(step, lo, hi)
	MOVQ(U32(16), t)
	VPBROADCASTQ(t, step)
	for _, c := range []struct {
		v VecPhysical
		k uint64
	}{{golden, 0x9e3779b97f4a7c15}, {c1, 0xbf58476d1ce4e5b9}, {c2, 0x94d049bb133111eb}} {
		MOVQ(U64(c.k), t)
		VPBROADCASTQ(t, c.v)
	}
	Load(Param("thr"), t)
	VPBROADCASTW(t.As32(), thr)
	Label("word")
	for i, z := range []VecPhysical{Z8, Z9} {
		ctr, tmp := []VecPhysical{lo, hi}[i], []VecPhysical{Z10, Z11}[i]
		VPADDQ(golden, ctr, z)
		VPSRLQ(Imm(30), z, tmp)
		VPXORQ(tmp, z, z)
		VPMULLQ(c1, z, z)
		VPSRLQ(Imm(27), z, tmp)
		VPXORQ(tmp, z, z)
		VPMULLQ(c2, z, z)
		VPSRLQ(Imm(31), z, tmp)
		VPXORQ(tmp, z, z)
	}
	VPCMPUW(Imm(5), thr, Z8, K1) // not less than: field ≥ thr
	VPCMPUW(Imm(5), thr, Z9, K2)
	KUNPCKDQ(K1, K2, K3) // K1's 32 bits low, K2's high
	KMOVQ(K3, Mem{Base: dst})
	VPADDQ(step, lo, lo)
	VPADDQ(step, hi, hi)
	ADDQ(Imm(8), dst)
	DECQ(n)
	JNZ(LabelRef("word"))
	VZEROUPPER()
	RET()
}
