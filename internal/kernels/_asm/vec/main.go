// Command vec generates the AVX2+FMA vector kernels of package kernels
// (vec_amd64.s and its stubs). Run it through go generate in internal/kernels.
//
// Every routine streams through its slices in blocks of several 8-lane YMM
// vectors, then single vectors, then one masked vector (VMASKMOVPS) for the
// 1–7 leftover elements, so nothing past a slice's end is read or written.
package main

import (
	"flag"
	"math"
	"os"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/buildtags"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

func main() {
	// avo reads the target from the environment: https://github.com/mmcloughlin/avo/issues/450
	os.Setenv("GOOS", "linux")
	os.Setenv("GOARCH", "amd64")

	// Package() would load the library's module, which this generator's
	// module does not require; the stubs only need the package's name.
	flag.Set("pkg", "kernels")
	Constraint(buildtags.Opt("amd64", "!purego"))

	tailMask = GLOBL("vecTailMask", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(0xffffffff))
	}
	for i := 8; i < 16; i++ {
		DATA(4*i, U32(0))
	}

	dot()
	sum()
	maxf()
	axpy()
	scale()
	exp()
	expSubSum()
	Generate()
}

// tailMask holds eight all-ones lanes followed by eight zero lanes: the 32
// bytes starting at lane 8−n select the first n lanes.
var tailMask Mem

// loadTailMask returns the mask selecting the first n (1..7) lanes.
func loadTailMask(n reg.Register) reg.VecVirtual {
	p := GP64()
	LEAQ(tailMask.Offset(32), p)
	SHLQ(Imm(2), n)
	SUBQ(n, p)
	m := YMM()
	VMOVDQU(Mem{Base: p}, m)
	return m
}

// bcast returns a 32-byte constant holding v in each lane, usable as the
// memory operand of a YMM instruction.
func bcast(name string, v uint32) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(v))
	}
	return m
}

func f32(name string, v float32) Mem { return bcast(name, math.Float32bits(v)) }

// loadSlice loads a slice parameter's base and length.
func loadSlice(name string) (base, n reg.Register) {
	return Load(Param(name).Base(), GP64()), Load(Param(name).Len(), GP64())
}

// hsum reduces the eight lanes of y with op (VADDPS or VMAXPS) into the
// lowest lane of its XMM half.
func hreduce(y reg.VecVirtual, op func(...Op)) {
	t := XMM()
	x := y.AsX()
	VEXTRACTF128(Imm(1), y, t)
	op(t, x, x)
	VPERMILPD(Imm(1), x, t)
	op(t, x, x)
	VMOVSHDUP(x, t)
	op(t, x, x)
}

// reduction emits a loop that folds the slices into acc[0] with step, which
// consumes one 8-lane vector at each of the given byte offsets.
func reduction(unroll int, n reg.Register, ptrs []reg.Register, acc []reg.VecVirtual,
	step func(acc reg.VecVirtual, off int), tail func(acc reg.VecVirtual, mask reg.VecVirtual), name string) {
	Label(name + "_block")
	CMPQ(n, U32(8*unroll))
	JL(LabelRef(name + "_single"))
	for u := 0; u < unroll; u++ {
		step(acc[u%len(acc)], 32*u)
	}
	for _, p := range ptrs {
		ADDQ(U32(32*unroll), p)
	}
	SUBQ(U32(8*unroll), n)
	JMP(LabelRef(name + "_block"))

	Label(name + "_single")
	CMPQ(n, Imm(8))
	JL(LabelRef(name + "_tail"))
	step(acc[0], 0)
	for _, p := range ptrs {
		ADDQ(Imm(32), p)
	}
	SUBQ(Imm(8), n)
	JMP(LabelRef(name + "_single"))

	Label(name + "_tail")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	tail(acc[len(acc)-1], loadTailMask(n))
	Label(name + "_done")
}

func dot() {
	TEXT("dotAVX2", NOSPLIT, "func(x, y []float32) float32")
	Pragma("noescape")
	Doc("dotAVX2 returns Σ x[i]·y[i]; len(y) ≥ len(x).")
	x, n := loadSlice("x")
	y := Load(Param("y").Base(), GP64())
	// FMA latency × loads per FMA: four chains keep the two load ports busy.
	acc := make([]reg.VecVirtual, 4)
	for i := range acc {
		acc[i] = YMM()
		VXORPS(acc[i], acc[i], acc[i])
	}
	t := YMM()
	reduction(8, n, []reg.Register{x, y}, acc, func(a reg.VecVirtual, off int) {
		VMOVUPS(Mem{Base: x, Disp: off}, t)
		VFMADD231PS(Mem{Base: y, Disp: off}, t, a)
	}, func(a, mask reg.VecVirtual) {
		u := YMM()
		VMASKMOVPS(Mem{Base: x}, mask, t)
		VMASKMOVPS(Mem{Base: y}, mask, u)
		VFMADD231PS(u, t, a)
	}, "dot")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	hreduce(acc[0], VADDPS)
	VZEROUPPER()
	Store(acc[0].AsX(), ReturnIndex(0))
	RET()
}

func sum() {
	TEXT("sumAVX2", NOSPLIT, "func(x []float32) float32")
	Pragma("noescape")
	Doc("sumAVX2 returns Σ x[i].")
	x, n := loadSlice("x")
	acc := make([]reg.VecVirtual, 4)
	for i := range acc {
		acc[i] = YMM()
		VXORPS(acc[i], acc[i], acc[i])
	}
	reduction(8, n, []reg.Register{x}, acc, func(a reg.VecVirtual, off int) {
		VADDPS(Mem{Base: x, Disp: off}, a, a)
	}, func(a, mask reg.VecVirtual) {
		t := YMM()
		VMASKMOVPS(Mem{Base: x}, mask, t)
		VADDPS(t, a, a)
	}, "sum")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	hreduce(acc[0], VADDPS)
	VZEROUPPER()
	Store(acc[0].AsX(), ReturnIndex(0))
	RET()
}

func maxf() {
	negInf := f32("vecNegInf", float32(math.Inf(-1)))
	TEXT("maxAVX2", NOSPLIT, "func(x []float32) float32")
	Pragma("noescape")
	Doc("maxAVX2 returns the largest non-NaN element of x, or -Inf if there is none.")
	x, n := loadSlice("x")
	acc := make([]reg.VecVirtual, 4)
	for i := range acc {
		acc[i] = YMM()
		VMOVUPS(negInf, acc[i])
	}
	t := YMM()
	// VMAXPS returns its first (Go order) operand when either is NaN, so
	// with the accumulator there a NaN element leaves it unchanged; the
	// accumulators start at -Inf and never become NaN.
	reduction(8, n, []reg.Register{x}, acc, func(a reg.VecVirtual, off int) {
		VMOVUPS(Mem{Base: x, Disp: off}, t)
		VMAXPS(a, t, a)
	}, func(a, mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: x}, mask, t)
		// Masked-off lanes load as 0, which could exceed the true maximum.
		u := YMM()
		VMOVUPS(negInf, u)
		VBLENDVPS(mask, t, u, t)
		VMAXPS(a, t, a)
	}, "max")
	VMAXPS(acc[1], acc[0], acc[0])
	VMAXPS(acc[3], acc[2], acc[2])
	VMAXPS(acc[2], acc[0], acc[0])
	hreduce(acc[0], VMAXPS)
	VZEROUPPER()
	Store(acc[0].AsX(), ReturnIndex(0))
	RET()
}

// elementwise emits a loop applying step to each 8-lane vector at a byte
// offset from the pointers, and tail to the last 1..7 elements under a mask.
func elementwise(unroll int, n reg.Register, ptrs []reg.Register,
	step func(off int), tail func(mask reg.VecVirtual), name string) {
	reduction(unroll, n, ptrs, []reg.VecVirtual{nil}, func(_ reg.VecVirtual, off int) { step(off) },
		func(_, mask reg.VecVirtual) { tail(mask) }, name)
}

func axpy() {
	TEXT("axpyAVX2", NOSPLIT, "func(alpha float32, x, y []float32)")
	Pragma("noescape")
	Doc("axpyAVX2 computes y[i] += alpha·x[i]; len(y) ≥ len(x).")
	a := YMM()
	VBROADCASTSS(Load(Param("alpha"), XMM()), a)
	x, n := loadSlice("x")
	y := Load(Param("y").Base(), GP64())
	ts := []reg.VecVirtual{YMM(), YMM(), YMM(), YMM()}
	elementwise(4, n, []reg.Register{x, y}, func(off int) {
		t := ts[off/32%len(ts)]
		VMOVUPS(Mem{Base: y, Disp: off}, t)
		VFMADD231PS(Mem{Base: x, Disp: off}, a, t)
		VMOVUPS(t, Mem{Base: y, Disp: off})
	}, func(mask reg.VecVirtual) {
		t, u := ts[0], ts[1]
		VMASKMOVPS(Mem{Base: x}, mask, t)
		VMASKMOVPS(Mem{Base: y}, mask, u)
		VFMADD231PS(t, a, u)
		VMASKMOVPS(u, mask, Mem{Base: y})
	}, "axpy")
	VZEROUPPER()
	RET()
}

func scale() {
	TEXT("scaleAVX2", NOSPLIT, "func(alpha float32, x []float32)")
	Pragma("noescape")
	Doc("scaleAVX2 computes x[i] *= alpha.")
	a := YMM()
	VBROADCASTSS(Load(Param("alpha"), XMM()), a)
	x, n := loadSlice("x")
	ts := []reg.VecVirtual{YMM(), YMM(), YMM(), YMM()}
	elementwise(4, n, []reg.Register{x}, func(off int) {
		t := ts[off/32%len(ts)]
		VMULPS(Mem{Base: x, Disp: off}, a, t)
		VMOVUPS(t, Mem{Base: x, Disp: off})
	}, func(mask reg.VecVirtual) {
		t := ts[0]
		VMASKMOVPS(Mem{Base: x}, mask, t)
		VMULPS(t, a, t)
		VMASKMOVPS(t, mask, Mem{Base: x})
	}, "scale")
	VZEROUPPER()
	RET()
}

// Constants of exp, shared with expScalar in vec_generic.go (which documents
// the algorithm); the polynomial is the minimax fit of e^r on [−ln2/2, ln2/2].
type expConsts struct {
	lo, hi                    reg.VecVirtual // clamp bounds, in registers
	log2e, ln2Hi, ln2Lo, bias Mem
	c6, c5, c4, c3, c2, one   Mem
	declared                  bool
}

var ec expConsts

func expConstData() {
	if ec.declared {
		return
	}
	ec.declared = true
	ec.log2e = f32("vecExpLog2e", 1.44269504088896341)
	ec.ln2Hi = f32("vecExpLn2Hi", 0.693359375)
	ec.ln2Lo = f32("vecExpLn2Lo", -2.12194440e-4)
	ec.c6 = f32("vecExpC6", 1.3814191e-3)
	ec.c5 = f32("vecExpC5", 8.368914e-3)
	ec.c4 = f32("vecExpC4", 4.1668408e-2)
	ec.c3 = f32("vecExpC3", 1.666652e-1)
	ec.c2 = f32("vecExpC2", 4.9999994e-1)
	ec.one = f32("vecOne", 1)
	ec.bias = bcast("vecExpBias", 127)
	expLoMem = f32("vecExpLo", -104)
	expHiMem = f32("vecExpHi", 89)
}

var expLoMem, expHiMem Mem

func expLoadBounds() {
	ec.lo, ec.hi = YMM(), YMM()
	VMOVUPS(expLoMem, ec.lo)
	VMOVUPS(expHiMem, ec.hi)
}

// expVec replaces x by exp(x) lane-wise, using p, k and h as scratch.
//
// x is first clamped to [-104, 89], where every step below is exact or
// harmless: e^-104 rounds to 0 and e^89 to +Inf by themselves, so no lane
// needs a blend. The clamps return x when it is NaN (operand order), and a
// NaN lane stays NaN through the rest: VCVTPS2DQ turns it into 0x80000000,
// whose two scale factors come out as 1.0 and a zero exponent increment.
func expVec(x, p, k, h reg.VecVirtual) {
	VMAXPS(x, ec.lo, x)
	VMINPS(x, ec.hi, x)
	// k = round(x·log2e), r = x − k·ln2 in two steps (Cody–Waite).
	VMULPS(ec.log2e, x, k)
	VROUNDPS(Imm(8), k, k) // nearest-even, no precision exception
	VFNMADD231PS(ec.ln2Hi, k, x)
	VFNMADD231PS(ec.ln2Lo, k, x)
	VCVTPS2DQ(k, k)
	// p = e^r, Horner with FMA.
	VMOVUPS(ec.c6, p)
	VFMADD213PS(ec.c5, x, p)
	VFMADD213PS(ec.c4, x, p)
	VFMADD213PS(ec.c3, x, p)
	VFMADD213PS(ec.c2, x, p)
	VFMADD213PS(ec.one, x, p)
	VFMADD213PS(ec.one, x, p)
	// p·2^k with k ∈ [-151, 128] split as k = h + (k−h), h = k>>1: adding
	// k−h to p's exponent field is exact (the result is normal), and the
	// multiplication by 2^h rounds once, so subnormal results are correctly
	// rounded from p and overflow gives +Inf.
	VPSRAD(Imm(1), k, h)
	VPSUBD(h, k, k)
	VPADDD(ec.bias, h, h)
	VPSLLD(Imm(23), h, h)
	VPSLLD(Imm(23), k, k)
	VPADDD(k, p, p)
	VMULPS(h, p, x)
}

func exp() {
	expConstData()
	TEXT("expAVX2", NOSPLIT, "func(dst, src []float32)")
	Pragma("noescape")
	Doc("expAVX2 computes dst[i] = exp(src[i]); len(dst) ≥ len(src).")
	dst := Load(Param("dst").Base(), GP64())
	src, n := loadSlice("src")
	expLoadBounds()
	const unroll = 3
	var xs, ps, ks, hs [unroll]reg.VecVirtual
	for i := range xs {
		xs[i], ps[i], ks[i], hs[i] = YMM(), YMM(), YMM(), YMM()
	}
	elementwise(unroll, n, []reg.Register{src, dst}, func(off int) {
		i := off / 32
		VMOVUPS(Mem{Base: src, Disp: off}, xs[i])
		expVec(xs[i], ps[i], ks[i], hs[i])
		VMOVUPS(xs[i], Mem{Base: dst, Disp: off})
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: src}, mask, xs[0])
		expVec(xs[0], ps[0], ks[0], hs[0])
		VMASKMOVPS(xs[0], mask, Mem{Base: dst})
	}, "exp")
	VZEROUPPER()
	RET()
}

func expSubSum() {
	expConstData()
	TEXT("expSubSumAVX2", NOSPLIT, "func(dst, src []float32, m float32) float32")
	Pragma("noescape")
	Doc("expSubSumAVX2 computes dst[i] = exp(src[i] − m) and returns Σ dst[i];",
		"len(dst) ≥ len(src). The caller handles m = -Inf.")
	dst := Load(Param("dst").Base(), GP64())
	src, n := loadSlice("src")
	m := YMM()
	VBROADCASTSS(Load(Param("m"), XMM()), m)
	expLoadBounds()
	const unroll = 2
	acc := []reg.VecVirtual{YMM(), YMM()}
	for _, a := range acc {
		VXORPS(a, a, a)
	}
	var xs, ps, ks, hs [unroll]reg.VecVirtual
	for i := range xs {
		xs[i], ps[i], ks[i], hs[i] = YMM(), YMM(), YMM(), YMM()
	}
	reduction(unroll, n, []reg.Register{src, dst}, acc, func(a reg.VecVirtual, off int) {
		i := off / 32
		VMOVUPS(Mem{Base: src, Disp: off}, xs[i])
		VSUBPS(m, xs[i], xs[i])
		expVec(xs[i], ps[i], ks[i], hs[i])
		VMOVUPS(xs[i], Mem{Base: dst, Disp: off})
		VADDPS(xs[i], a, a)
	}, func(a, mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: src}, mask, xs[0])
		VSUBPS(m, xs[0], xs[0])
		expVec(xs[0], ps[0], ks[0], hs[0])
		VMASKMOVPS(xs[0], mask, Mem{Base: dst})
		// Masked-off lanes hold exp(−m), not 0.
		VANDPS(mask, xs[0], xs[0])
		VADDPS(xs[0], a, a)
	}, "expsubsum")
	VADDPS(acc[1], acc[0], acc[0])
	hreduce(acc[0], VADDPS)
	VZEROUPPER()
	Store(acc[0].AsX(), ReturnIndex(0))
	RET()
}
