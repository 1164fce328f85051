// Command bf16 generates the bfloat16 kernels of package kernels
// (bf16_amd64.s, and their Go declarations in bf16_amd64_stubs.go):
//
//	cd internal/kernels/_asm && go run ./bf16 -out ../bf16_amd64.s -stubs ../bf16_amd64_stubs.go -pkg kernels
//
// Two groups of routines:
//
//   - float32 ↔ bfloat16 conversion of 16 lanes at a time with AVX-512 F/BW
//     integer instructions, rounding to nearest even exactly as the Go
//     reference (Float32ToBF16) does, subnormals included. VCVTNEPS2BF16
//     would be one instruction, but it flushes subnormal inputs and outputs
//     to zero, so it is not used. The same rounding packs float32
//     operands straight into the GEMM's k-pair words: two rows of B, or of
//     a transposed A, for one k pair (cvtPairsAVX512) or for all of a
//     block's pairs (cvtPairs16AVX512, cvtPairs6AVX512), and six rows of a
//     plain A into a micro-panel (cvtA6AVX512); interleaveBF16AVX512 pairs
//     two bf16 rows.
//   - the bf16 GEMM micro-kernels. They read operands packed by
//     bf16gemm.go: an A micro-panel of 6 rows and a B micro-panel of 16
//     columns hold, for each pair of adjacent k, one 32-bit word per row
//     (column): the bf16 of the even k in its low half, the odd k in its high
//     half. That is the layout of the sgemm kernels with a float replaced by a
//     k pair, so the kernels have the same shape as _asm/sgemm512's: 12×32
//     tiles in 24 ZMM accumulators, two B loads and twelve 32-bit broadcasts
//     of A per k pair, and VDPBF16PS (two multiply-adds per float32 lane)
//     in place of VFMADD231PS.
//
// Neither Go's assembler nor avo knows VDPBF16PS (AVX512_BF16), so the
// generator encodes it (EVEX.512.F3.0F38.W0 52 /r, registers only) and emits
// its bytes (encodeVDPBF16PS); TestBF16Kernel in internal/kernels checks the
// kernels' results.
package main

import (
	"flag"
	"fmt"
	"os"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/buildtags"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"

	"github.com/galleon-ml/galleon/internal/kernels/_asm/internal/zmmgemm"
)

const (
	panelRows = 6  // rows of an A micro-panel
	panelCols = 16 // columns of a B micro-panel (one ZMM of k pairs)

	// unroll is how many k pairs one trip of the main loop covers.
	unroll = 4

	// prefetchB is how far ahead, in bytes, each B micro-panel stream is
	// prefetched into L1 (16 k pairs).
	prefetchB = 1024
)

func main() {
	// avo reads the target from the environment: https://github.com/mmcloughlin/avo/issues/450
	os.Setenv("GOOS", "linux")
	os.Setenv("GOARCH", "amd64")
	flag.Set("pkg", "kernels")
	Constraint(buildtags.Opt("amd64", "!purego"))

	consts()
	toBF16()
	cvtPairs()
	cvtPairBlock(6)
	cvtPairBlock(16)
	cvtA6()
	fromBF16()
	interleave()
	dotBF16()
	for _, bias := range []bool{false, true} {
		for _, s := range [][2]int{{2, 2}, {2, 1}, {1, 2}, {1, 1}} {
			kernel(s[0], s[1], bias)
		}
	}
	Generate()
}

var cOne, cRound, cAbs, cInf, cQuiet, cIota Mem

// cA6Idx and cA6Idx45 are cvtA6's permutes, cA6Mask45 its merge masks.
var (
	cA6Idx, cA6Idx45 [3]Mem
	cA6Mask45        [3]uint16
)

func consts() {
	c := func(name string, v uint32) Mem {
		m := GLOBL(name, RODATA|NOPTR)
		DATA(0, U32(v))
		return m
	}
	cOne = c("bf16One", 1)
	cRound = c("bf16Round", 0x7fff)
	cAbs = c("bf16Abs", 0x7fffffff)
	cInf = c("bf16Inf", 0x7f800000)
	cQuiet = c("bf16Quiet", 0x00400000)
	cIota = GLOBL("bf16Iota", RODATA|NOPTR)
	for i := range 16 {
		DATA(4*i, U32(uint32(i)))
	}
	// Output lane i of cvtA6's vector h is word j = 16h+i of a run of
	// eight pairs: pair j/6 of row j%6. Rows 0 and 1 are lanes 0–7 and
	// 8–15 of the first table of VPERMI2D, rows 2 and 3 those of the
	// second (indices 16–31); rows 4 and 5 are lanes 0–7 and 8–15 of the
	// table that VPERMD merges under the mask.
	for h := range 3 {
		cA6Idx[h] = GLOBL(fmt.Sprintf("bf16A6Idx%d", h), RODATA|NOPTR)
		for i := range 16 {
			pp, r := (16*h+i)/6, (16*h+i)%6
			if r < 4 {
				DATA(4*i, U32(uint32(16*(r/2)+8*(r%2)+pp)))
			} else {
				DATA(4*i, U32(0))
			}
		}
		cA6Idx45[h] = GLOBL(fmt.Sprintf("bf16A6Idx45_%d", h), RODATA|NOPTR)
		for i := range 16 {
			pp, r := (16*h+i)/6, (16*h+i)%6
			if r >= 4 {
				DATA(4*i, U32(uint32(8*(r-4)+pp)))
				cA6Mask45[h] |= 1 << i
			} else {
				DATA(4*i, U32(0))
			}
		}
	}
}

// roundConsts are the broadcast constants of roundBF16.
type roundConsts struct{ one, rnd, abs, inf, quiet VecVirtual }

func loadRoundConsts() roundConsts {
	c := roundConsts{ZMM(), ZMM(), ZMM(), ZMM(), ZMM()}
	VPBROADCASTD(cOne, c.one)
	VPBROADCASTD(cRound, c.rnd)
	VPBROADCASTD(cAbs, c.abs)
	VPBROADCASTD(cInf, c.inf)
	VPBROADCASTD(cQuiet, c.quiet)
	return c
}

// roundBF16 loads 16 float32s from src and leaves in t their bfloat16s in
// the upper halves of the lanes (the lower halves are garbage), rounded to
// nearest even as Float32ToBF16 does; x and a are scratch.
func roundBF16(c roundConsts, src Mem, x, t, a VecVirtual, nan Register) {
	VMOVDQU32(src, x)
	roundLoaded(c, x, t, a, nan)
}

// roundLoaded is roundBF16 on the float32s already in x.
func roundLoaded(c roundConsts, x, t, a VecVirtual, nan Register) {
	// t = x + 0x7fff + ((x >> 16) & 1): rounding to nearest even at bit 16.
	VPSRLD(Imm(16), x, t)
	VPANDD(c.one, t, t)
	VPADDD(c.rnd, t, t)
	VPADDD(x, t, t)
	// NaN lanes (|x| > Inf bits) instead keep x with the quiet bit set,
	// which rounding could have turned into Inf.
	VPANDD(c.abs, x, a)
	VPCMPUD(Imm(6), c.inf, a, nan) // a > inf, unsigned
	VPORD(c.quiet, x, nan, t)      // merge-masked: only NaN lanes
}

// per16 emits the loop of the conversion routines: body runs while n ≥ 16,
// advancing its own pointers, then n drops by 16; the routine returns after
// the last whole group (the callers finish the tail in Go).
func per16(n Register, body func()) {
	Label("loop")
	CMPQ(n, Imm(16))
	JL(LabelRef("done"))
	body()
	SUBQ(Imm(16), n)
	JMP(LabelRef("loop"))
	Label("done")
	VZEROUPPER()
	RET()
}

// toBF16 emits f32ToBF16AVX512: dst[i] = bfloat16(src[i]) for the first
// n&^15 elements, rounding to nearest even; NaNs keep their sign and
// top payload bits and are made quiet.
func toBF16() {
	TEXT("f32ToBF16AVX512", NOSPLIT, "func(dst *uint16, src *float32, n int)")
	Pragma("noescape")
	Doc("f32ToBF16AVX512 rounds src[:n&^15] to bfloat16 (nearest even) into dst.")
	dst, src, n := Load(Param("dst"), GP64()), Load(Param("src"), GP64()), Load(Param("n"), GP64())
	c := loadRoundConsts()
	x, t, a := ZMM(), ZMM(), ZMM()
	nan := K()
	per16(n, func() {
		roundBF16(c, Mem{Base: src}, x, t, a, nan)
		VPSRLD(Imm(16), t, t)
		VPMOVDW(t, Mem{Base: dst})
		ADDQ(Imm(64), src)
		ADDQ(Imm(32), dst)
	})
}

// joinPairs sets dst to the k-pair words of two rounded vectors (roundBF16's
// t): the bf16 of t0 in the low halves, of t1 in the high halves, i.e.
// t0>>16 | t1&0xffff0000. It clobbers t0 and t1.
func joinPairs(t0, t1, dst VecVirtual) {
	VPSRLD(Imm(16), t0, t0)
	VPSRLD(Imm(16), t1, t1)
	VPSLLD(Imm(16), t1, t1)
	VPORD(t1, t0, dst)
}

// cvtPairs emits cvtPairsAVX512, the packing of two float32 rows of a k
// pair: 16 words at a time, dst[g·stride+i] = bf16(s0[16g+i]) |
// bf16(s1[16g+i])<<16 (rounded as toBF16 rounds), for 16g+i < n&^15. With
// stride 16 the words are contiguous; with a B micro-panel's stride each
// group of 16 lands in its own panel.
func cvtPairs() {
	TEXT("cvtPairsAVX512", NOSPLIT, "func(dst *uint32, stride int, s0, s1 *float32, n int)")
	Pragma("noescape")
	Doc("cvtPairsAVX512 sets dst[g·stride+i] = bf16(s0[16g+i]) | bf16(s1[16g+i])<<16",
		"for i < 16 and 16g < n&^15, rounding to nearest even as f32ToBF16AVX512.")
	dst, stride := Load(Param("dst"), GP64()), Load(Param("stride"), GP64())
	s0, s1, n := Load(Param("s0"), GP64()), Load(Param("s1"), GP64()), Load(Param("n"), GP64())
	SHLQ(Imm(2), stride)
	c := loadRoundConsts()
	x, t0, t1, a := ZMM(), ZMM(), ZMM(), ZMM()
	nan := K()
	per16(n, func() {
		roundBF16(c, Mem{Base: s0}, x, t0, a, nan)
		roundBF16(c, Mem{Base: s1}, x, t1, a, nan)
		joinPairs(t0, t1, t0)
		VMOVDQU32(t0, Mem{Base: dst})
		ADDQ(Imm(64), s0)
		ADDQ(Imm(64), s1)
		ADDQ(stride, dst)
	})
}

// cvtPairBlock emits cvtPairs6AVX512 (group 6) or cvtPairs16AVX512 (group
// 16): cvtPairs over kp k pairs at once, two stored float32 rows each,
// for the 6-row micro-panels of a transposed A or the 16-column ones of
// B. Pair pp joins rows 2pp and 2pp+1 (ld floats apart), and its word for
// column c goes to dst[pp·group + (c/group)·stride + c%group]. The columns
// go 48 at a time (three vectors of words); each group's words are
// brought to the bottom of a vector by VALIGND where they do not start
// there, and stored under a mask of group lanes. The last run of fewer
// than 48 is loaded under masks that zero the lanes past n, so its last
// group is padded with zero words. Looping over the pairs in the routine
// keeps the constants in registers and spares a call per pair.
func cvtPairBlock(group int) {
	name := fmt.Sprintf("cvtPairs%dAVX512", group)
	TEXT(name, NOSPLIT, "func(dst *uint32, stride int, src *float32, ld, n, kp int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets dst[pp·%d + (c/%d)·stride + c%%%d] = bf16(src[2pp·ld+c]) | bf16(src[(2pp+1)·ld+c])<<16", name, group, group, group),
		fmt.Sprintf("for pp < kp and c < n, rounding to nearest even as f32ToBF16AVX512; the words of a last group past n are zero."))
	dst, stride := Load(Param("dst"), GP64()), Load(Param("stride"), GP64())
	src, ld := Load(Param("src"), GP64()), Load(Param("ld"), GP64())
	n, kp := Load(Param("n"), GP64()), Load(Param("kp"), GP64())
	SHLQ(Imm(2), stride)
	SHLQ(Imm(2), ld)
	var s3 Register
	if group == 6 {
		s3 = GP64()
		LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, s3)
	}
	gm := K()
	{
		bits := GP32()
		MOVL(U32(1<<group-1), bits)
		KMOVW(bits, gm)
	}
	c := loadRoundConsts()
	// The tail's masks: lane i of vector h is loaded if 16h+i < n%48.
	masks := []Register{K(), K(), K()}
	{
		iota, nv, left, rem := ZMM(), ZMM(), GP64(), GP64()
		MOVQ(n, RAX)
		XORL(EDX, EDX)
		MOVQ(U32(48), rem)
		DIVQ(rem) // RDX = n % 48
		VMOVDQU32(cIota, iota)
		for h, mh := range masks {
			MOVQ(RDX, left)
			if h > 0 {
				SUBQ(Imm(uint64(16*h)), left)
			}
			VPBROADCASTD(left.As32(), nv)
			VPCMPD(Imm(1), nv, iota, mh) // iota < n%48 - 16h
		}
	}
	x, t0, t1, a, t := ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
	w := []VecVirtual{ZMM(), ZMM(), ZMM()}
	nan := K()
	d, a0, a1, left := GP64(), GP64(), GP64(), GP64()
	// pairs makes w from a0 and a1, loading each 16 under masks[h] when
	// masked.
	pairs := func(masked bool) {
		for h, wh := range w {
			for i, row := range []Register{a0, a1} {
				if !masked {
					VMOVDQU32(Mem{Base: row, Disp: 64 * h}, x)
				} else {
					VMOVDQU32_Z(Mem{Base: row, Disp: 64 * h}, masks[h], x)
				}
				roundLoaded(c, x, []VecVirtual{t0, t1}[i], a, nan)
			}
			joinPairs(t0, t1, wh)
		}
	}
	// store writes the run's groups to d, d+stride, …; with tail, only
	// while group·g < left. It leaves d at the next run's first group.
	store := func(tail bool) {
		var dsts []Mem
		if group == 6 {
			d4 := GP64()
			LEAQ(Mem{Base: d, Index: stride, Scale: 4}, d4)
			dsts = []Mem{{Base: d}, {Base: d, Index: stride, Scale: 1}, {Base: d, Index: stride, Scale: 2}, {Base: d, Index: s3, Scale: 1},
				{Base: d4}, {Base: d4, Index: stride, Scale: 1}, {Base: d4, Index: stride, Scale: 2}, {Base: d4, Index: s3, Scale: 1}}
			defer LEAQ(Mem{Base: d4, Index: stride, Scale: 4}, d)
		} else {
			dsts = []Mem{{Base: d}, {Base: d, Index: stride, Scale: 1}, {Base: d, Index: stride, Scale: 2}}
			defer func() {
				LEAQ(Mem{Base: d, Index: stride, Scale: 2}, d)
				ADDQ(stride, d)
			}()
		}
		for g, m := range dsts {
			if tail && g > 0 {
				CMPQ(left, Imm(uint64(group*g)))
				JLE(LabelRef("next"))
			}
			lo, sh := group*g/16, group*g%16 // the group starts at lane sh of w[lo]
			src := w[lo]
			if sh != 0 {
				hi := w[lo]
				if sh+group > 16 {
					hi = w[lo+1]
				}
				VALIGND(Imm(uint64(sh)), w[lo], hi, t) // t = (hi:w[lo]) >> 32·sh
				src = t
			}
			if group <= 8 {
				VMOVDQU32(src.AsY(), gm, m) // a 256-bit store: half the work of a 512-bit one
			} else {
				VMOVDQU32(src, gm, m)
			}
		}
	}
	Label("pair")
	TESTQ(kp, kp)
	JZ(LabelRef("ret"))
	MOVQ(dst, d)
	MOVQ(src, a0)
	LEAQ(Mem{Base: src, Index: ld, Scale: 1}, a1)
	MOVQ(n, left)
	Label("run")
	CMPQ(left, Imm(48))
	JL(LabelRef("tail"))
	pairs(false)
	store(false)
	ADDQ(U32(192), a0)
	ADDQ(U32(192), a1)
	SUBQ(Imm(48), left)
	JMP(LabelRef("run"))
	Label("tail")
	TESTQ(left, left)
	JZ(LabelRef("next"))
	pairs(true)
	store(true)
	Label("next")
	ADDQ(U32(uint64(4*group)), dst)
	LEAQ(Mem{Base: src, Index: ld, Scale: 2}, src)
	DECQ(kp)
	JMP(LabelRef("pair"))
	Label("ret")
	VZEROUPPER()
	RET()
}

// cvtA6 emits cvtA6AVX512, the packing of six float32 rows of a plain
// (not transposed) A into one 6-row micro-panel of k-pair words: word
// (pp, r) = bf16(row r, k 2pp) | bf16(row r, k 2pp+1)<<16 goes to
// dst[6pp + r]. Eight pairs at a time: each row's sixteen floats are
// rounded and narrowed (VPMOVDW) into eight words, the six rows' words are
// joined two rows to a vector, and two permutes per output vector
// (VPERMI2D over rows 0–3, VPERMD merging rows 4 and 5, cA6Idx) lay the 48
// words out in panel order for three contiguous stores. A last run of
// fewer than eight pairs is loaded and stored under masks.
func cvtA6() {
	TEXT("cvtA6AVX512", NOSPLIT, "func(dst *uint32, src *float32, ld, kp int)")
	Pragma("noescape")
	Doc("cvtA6AVX512 sets dst[6pp+r] = bf16(src[r·ld+2pp]) | bf16(src[r·ld+2pp+1])<<16",
		"for r < 6 and pp < kp, rounding to nearest even as f32ToBF16AVX512.")
	dst, src := Load(Param("dst"), GP64()), Load(Param("src"), GP64())
	ld, kp := Load(Param("ld"), GP64()), Load(Param("kp"), GP64())
	SHLQ(Imm(2), ld)
	l3, s4, tmp := GP64(), GP64(), GP64()
	LEAQ(Mem{Base: ld, Index: ld, Scale: 2}, l3)
	c := loadRoundConsts()
	var idxA, idxB []VecVirtual
	var m45 []Register
	for h := range 3 {
		ia, ib, k := ZMM(), ZMM(), K()
		VMOVDQU32(cA6Idx[h], ia)
		VMOVDQU32(cA6Idx45[h], ib)
		MOVL(U32(uint32(cA6Mask45[h])), tmp.As32())
		KMOVW(tmp.As32(), k)
		idxA, idxB, m45 = append(idxA, ia), append(idxB, ib), append(m45, k)
	}
	// The tail's masks (made in the tail, where fewer are live): q =
	// kp%8 pairs, so lanes < 2q of each row's load and lanes 16h+i < 6q
	// of output vector h.
	lm, nv := K(), ZMM()
	tailMask := func(k Register, n GPVirtual) {
		VPBROADCASTD(n.As32(), nv)
		VPCMPD(Imm(6), cIota, nv, k) // n > iota
	}
	x, t, a, o := ZMM(), ZMM(), ZMM(), ZMM()
	rz := []VecVirtual{ZMM(), ZMM(), ZMM(), ZMM(), ZMM(), ZMM()}
	nan := K()
	body := func(masked bool) {
		LEAQ(Mem{Base: src, Index: ld, Scale: 4}, s4)
		rows := []Mem{{Base: src}, {Base: src, Index: ld, Scale: 1}, {Base: src, Index: ld, Scale: 2}, {Base: src, Index: l3, Scale: 1},
			{Base: s4}, {Base: s4, Index: ld, Scale: 1}}
		for r, m := range rows {
			if masked {
				VMOVDQU32_Z(m, lm, x)
			} else {
				VMOVDQU32(m, x)
			}
			roundLoaded(c, x, t, a, nan)
			VPSRLD(Imm(16), t, t)
			VPMOVDW(t, rz[r].AsY()) // eight words, the upper half zeroed
		}
		for r := 0; r < 6; r += 2 {
			VINSERTI32X8(Imm(1), rz[r+1].AsY(), rz[r], rz[r]) // rows r, r+1
		}
		if masked {
			LEAQ(Mem{Base: kp, Index: kp, Scale: 2}, tmp)
			SHLQ(Imm(1), tmp) // 6q
		}
		for h := range 3 {
			VMOVDQA64(idxA[h], o)
			VPERMI2D(rz[2], rz[0], o)
			VPERMD(rz[4], idxB[h], m45[h], o)
			if masked {
				sm := K()
				tailMask(sm, tmp)
				VMOVDQU32(o, sm, Mem{Base: dst, Disp: 64 * h})
				SUBQ(Imm(16), tmp)
			} else {
				VMOVDQU32(o, Mem{Base: dst, Disp: 64 * h})
			}
		}
	}
	Label("loop")
	CMPQ(kp, Imm(8))
	JL(LabelRef("tail"))
	body(false)
	ADDQ(Imm(64), src)
	ADDQ(U32(192), dst)
	SUBQ(Imm(8), kp)
	JMP(LabelRef("loop"))
	Label("tail") // 0 ≤ kp < 8
	TESTQ(kp, kp)
	JZ(LabelRef("ret"))
	LEAQ(Mem{Base: kp, Index: kp, Scale: 1}, tmp)
	tailMask(lm, tmp)
	body(true)
	Label("ret")
	VZEROUPPER()
	RET()
}

// fromBF16 emits bf16ToF32AVX512: dst[i] = float32(src[i]) (exact) for the
// first n&^15 elements.
func fromBF16() {
	TEXT("bf16ToF32AVX512", NOSPLIT, "func(dst *float32, src *uint16, n int)")
	Pragma("noescape")
	Doc("bf16ToF32AVX512 widens src[:n&^15] to float32 into dst.")
	dst, src, n := Load(Param("dst"), GP64()), Load(Param("src"), GP64()), Load(Param("n"), GP64())
	x := ZMM()
	per16(n, func() {
		VPMOVZXWD(Mem{Base: src}, x)
		VPSLLD(Imm(16), x, x)
		VMOVDQU32(x, Mem{Base: dst})
		ADDQ(Imm(32), src)
		ADDQ(Imm(64), dst)
	})
}

// interleave emits interleaveBF16AVX512: dst[g·stride+i] = s0[16g+i] |
// s1[16g+i]<<16 for 16g+i < n&^15, the k pairs of two rows of B dealt to
// its packed micro-panels (stride 16: contiguous).
func interleave() {
	TEXT("interleaveBF16AVX512", NOSPLIT, "func(dst *uint32, stride int, s0, s1 *uint16, n int)")
	Pragma("noescape")
	Doc("interleaveBF16AVX512 sets dst[g·stride+i] = s0[16g+i] | s1[16g+i]<<16 for i < 16 and 16g < n&^15.")
	dst, stride := Load(Param("dst"), GP64()), Load(Param("stride"), GP64())
	s0, s1, n := Load(Param("s0"), GP64()), Load(Param("s1"), GP64()), Load(Param("n"), GP64())
	SHLQ(Imm(2), stride)
	x, y := ZMM(), ZMM()
	per16(n, func() {
		VPMOVZXWD(Mem{Base: s0}, x)
		VPMOVZXWD(Mem{Base: s1}, y)
		VPSLLD(Imm(16), y, y)
		VPORD(y, x, x)
		VMOVDQU32(x, Mem{Base: dst})
		ADDQ(Imm(32), s0)
		ADDQ(Imm(32), s1)
		ADDQ(stride, dst)
	})
}

// dotBF16 emits dotBF16AVX512: the float32 sum of a[i]·b[i] over the
// first n&^31 bfloat16 elements, 32 per VDPBF16PS, in four accumulators.
func dotBF16() {
	TEXT("dotBF16AVX512", NOSPLIT, "func(a, b *uint16, n int) float32")
	Pragma("noescape")
	Doc("dotBF16AVX512 returns the float32 sum of a[i]·b[i] for i < n&^31.")
	a, b, n := RSI, RDI, RCX
	MOVQ(zmmgemm.ParamAddr("a"), a)
	MOVQ(zmmgemm.ParamAddr("b"), b)
	Load(Param("n"), n)
	acc := []VecPhysical{Z0, Z1, Z2, Z3}
	for _, z := range acc {
		VPXORD(z, z, z)
	}
	xs := []VecPhysical{Z4, Z5, Z6, Z7}
	ys := []VecPhysical{Z8, Z9, Z10, Z11}
	Label("loop4")
	CMPQ(n, U32(128))
	JL(LabelRef("loop1"))
	for u := 0; u < 4; u++ {
		VMOVDQU32(Mem{Base: a, Disp: 64 * u}, xs[u])
		VMOVDQU32(Mem{Base: b, Disp: 64 * u}, ys[u])
		vdpbf16ps(acc[u], xs[u], ys[u])
	}
	ADDQ(U32(256), a)
	ADDQ(U32(256), b)
	SUBQ(U32(128), n)
	JMP(LabelRef("loop4"))
	Label("loop1")
	CMPQ(n, Imm(32))
	JL(LabelRef("sum"))
	VMOVDQU32(Mem{Base: a}, xs[0])
	VMOVDQU32(Mem{Base: b}, ys[0])
	vdpbf16ps(acc[0], xs[0], ys[0])
	ADDQ(Imm(64), a)
	ADDQ(Imm(64), b)
	SUBQ(Imm(32), n)
	JMP(LabelRef("loop1"))
	Label("sum")
	VADDPS(Z1, Z0, Z0)
	VADDPS(Z3, Z2, Z2)
	VADDPS(Z2, Z0, Z0)
	VEXTRACTF32X8(Imm(1), Z0, Y1)
	VADDPS(Y1, Y0, Y0)
	VEXTRACTF128(Imm(1), Y0, X1)
	VADDPS(X1, X0, X0)
	VHADDPS(X0, X0, X0)
	VHADDPS(X0, X0, X0)
	Store(X0, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// kernel emits the micro-kernel for an (ap·6)×(bp·16) tile: ap A panels and
// bp B panels; with bias, the variant whose accumulators start from a bias
// row (the forward pass of a linear layer with a bias).
func kernel(ap, bp int, bias bool) {
	mr, nr := ap*panelRows, bp*panelCols
	variant := ""
	sig := "func(kp int, a *uint32, aStride int, b *uint32, bStride int, c *float32, ldc int, alpha, beta float32)"
	what := "C = alpha·A·B + beta·C"
	if bias {
		variant = "Bias"
		sig = "func(kp int, a *uint32, aStride int, b *uint32, bStride int, c *float32, ldc int, alpha, beta float32, bias *float32)"
		what = fmt.Sprintf("C = alpha·(A·B + bias) + beta·C, bias a row of %d floats added to every row,", nr)
	}
	name := fmt.Sprintf("bf16Kernel%dx%d%sAVX512", mr, nr, variant)
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(
		fmt.Sprintf("%s computes the %d×%d tile %s over kp k pairs.", name, mr, nr, what),
		fmt.Sprintf("A is %d packed 6-row micro-panel(s) of bf16 pairs, the second aStride", ap),
		fmt.Sprintf("words after the first; B is %d packed 16-column micro-panel(s), the", bp),
		"second bStride words after the first. With beta == 0 C is only written,",
		"never read. ldc is the row stride of C in elements. kp must be positive.",
	)
	zmmgemm.Emit(zmmgemm.Tile{AP: ap, BP: bp, PanelRows: panelRows, PanelCols: panelCols, Unroll: unroll,
		PrefetchB: prefetchB, K: "kp", StepName: "k pairs", Bias: bias}, func(i int, o zmmgemm.Operands) {
		bv, bc := []VecPhysical{Z24, Z25}, []VecPhysical{Z26, Z27, Z28, Z29}
		for h := 0; h < bp; h++ {
			VMOVDQU32(o.BMem(i, h), bv[h])
		}
		for r := 0; r < mr; r++ {
			t := bc[r%len(bc)]
			VPBROADCASTD(o.AMem(i, r), t)
			for h := 0; h < bp; h++ {
				vdpbf16ps(o.Acc(r, h), bv[h], t)
			}
		}
	})
}

// vdpbf16ps emits VDPBF16PS dst, src1, src2 (Intel operand order: dst +=
// pairwise bf16 dot products of src1 and src2) on ZMM registers, as bytes.
func vdpbf16ps(dst, src1, src2 VecPhysical) {
	for _, x := range encodeVDPBF16PS(int(dst.PhysicalIndex()), int(src1.PhysicalIndex()), int(src2.PhysicalIndex())) {
		Instruction(&ir.Instruction{Opcode: "BYTE", Operands: []Op{U8(x)}})
	}
	Comment(fmt.Sprintf("^ VDPBF16PS Z%d, Z%d, Z%d (Intel order)", dst.PhysicalIndex(), src1.PhysicalIndex(), src2.PhysicalIndex()))
}

// encodeVDPBF16PS returns the EVEX encoding of VDPBF16PS zmm(dst){k0},
// zmm(src1), zmm(src2): EVEX.512.F3.0F38.W0 52 /r with ModRM.reg = dst,
// EVEX.vvvv = src1 and ModRM.rm = src2 (registers 0–31). To read the bytes
// back, feed the BYTE lines of bf16_amd64.s to GNU objdump (objdump -D -b
// binary -m i386:x86-64): every one disassembles to the vdpbf16ps of the
// comment that follows it.
func encodeVDPBF16PS(dst, src1, src2 int) []byte {
	inv := func(x, bit int) byte { return byte(^(x >> bit) & 1) }
	p0 := inv(dst, 3)<<7 | inv(src2, 4)<<6 | inv(src2, 3)<<5 | inv(dst, 4)<<4 | 0x2 // map 0F38
	p1 := byte(^src1&0xf)<<3 | 1<<2 | 0x2                                           // W0, vvvv, pp = F3
	p2 := byte(0x40) | inv(src1, 4)<<3                                              // L'L = 512, V', no mask
	modrm := byte(0xc0) | byte(dst&7)<<3 | byte(src2&7)
	return []byte{0x62, p0, p1, p2, 0x52, modrm}
}
