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
	dotI8()
	dequantI8()
	sum()
	maxf()
	axpy()
	scale()
	exp()
	expSubSum()
	gelu()
	adamw()
	swiglu()
	swigluGrad()
	colSums()
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

// hreduce reduces the eight lanes of y with op (VADDPS or VMAXPS) into the
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

// loop emits the loop over n elements shared by all routines: block(k)
// processes k 8-lane vectors at byte offsets 0, 32, … from the pointers, first
// unroll at a time, then one at a time, and tail handles the last 1..7
// elements under a lane mask.
func loop(unroll int, n reg.Register, ptrs []reg.Register, block func(k int), tail func(mask reg.VecVirtual), name string) {
	Label(name + "_block")
	CMPQ(n, U32(8*unroll))
	JL(LabelRef(name + "_single"))
	block(unroll)
	for _, p := range ptrs {
		ADDQ(U32(32*unroll), p)
	}
	SUBQ(U32(8*unroll), n)
	JMP(LabelRef(name + "_block"))

	Label(name + "_single")
	CMPQ(n, Imm(8))
	JL(LabelRef(name + "_tail"))
	block(1)
	for _, p := range ptrs {
		ADDQ(Imm(32), p)
	}
	SUBQ(Imm(8), n)
	JMP(LabelRef(name + "_single"))

	Label(name + "_tail")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	tail(loadTailMask(n))
	Label(name + "_done")
}

// zeroed returns k zeroed YMM accumulators.
func zeroed(k int) []reg.VecVirtual {
	acc := make([]reg.VecVirtual, k)
	for i := range acc {
		acc[i] = YMM()
		VXORPS(acc[i], acc[i], acc[i])
	}
	return acc
}

// fold combines the accumulators pairwise into acc[0] with op.
func fold(acc []reg.VecVirtual, op func(...Op)) {
	for w := 1; w < len(acc); w *= 2 {
		for i := 0; i+w < len(acc); i += 2 * w {
			op(acc[i+w], acc[i], acc[i])
		}
	}
}

func ymms(k int) []reg.VecVirtual {
	r := make([]reg.VecVirtual, k)
	for i := range r {
		r[i] = YMM()
	}
	return r
}

func dot() {
	TEXT("dotAVX2", NOSPLIT, "func(x, y []float32) float32")
	Pragma("noescape")
	Doc("dotAVX2 returns Σ x[i]·y[i]; len(y) ≥ len(x).")
	x, n := loadSlice("x")
	y := Load(Param("y").Base(), GP64())
	// Each FMA needs two loads, so the two load ports allow one per cycle;
	// four chains cover the FMA latency.
	acc := zeroed(4)
	t := ymms(4)
	loop(8, n, []reg.Register{x, y}, func(k int) {
		for u := 0; u < k; u++ {
			VMOVUPS(Mem{Base: x, Disp: 32 * u}, t[u%4])
			VFMADD231PS(Mem{Base: y, Disp: 32 * u}, t[u%4], acc[u%4])
		}
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: x}, mask, t[0])
		VMASKMOVPS(Mem{Base: y}, mask, t[1])
		VFMADD231PS(t[1], t[0], acc[1])
	}, "dot")
	fold(acc, VADDPS)
	hreduce(acc[0], VADDPS)
	VZEROUPPER()
	Store(acc[0].AsX(), ReturnIndex(0))
	RET()
}

func dotI8() {
	TEXT("dotI8AVX2", NOSPLIT, "func(x []float32, w []int8) float32")
	Pragma("noescape")
	Doc("dotI8AVX2 returns Σ x[i]·w[i] over the first len(x)&^7 elements;",
		"len(w) ≥ len(x). The caller adds the last len(x)%8 products.")
	x, n := loadSlice("x")
	w := Load(Param("w").Base(), GP64())
	// Per 8 lanes: a sign-extending load of 8 bytes, a conversion and an
	// FMA reading x from memory, each two per cycle; eight chains cover the
	// FMA latency at that rate.
	const unroll = 8
	acc := zeroed(unroll)
	t := ymms(unroll)
	ANDQ(I32(-8), n)
	Label("dotI8_block")
	CMPQ(n, U32(8*unroll))
	JL(LabelRef("dotI8_single"))
	for u := 0; u < unroll; u++ {
		VPMOVSXBD(Mem{Base: w, Disp: 8 * u}, t[u])
		VCVTDQ2PS(t[u], t[u])
		VFMADD231PS(Mem{Base: x, Disp: 32 * u}, t[u], acc[u])
	}
	ADDQ(U32(8*unroll), w)
	ADDQ(U32(32*unroll), x)
	SUBQ(U32(8*unroll), n)
	JMP(LabelRef("dotI8_block"))
	Label("dotI8_single")
	TESTQ(n, n)
	JZ(LabelRef("dotI8_done"))
	VPMOVSXBD(Mem{Base: w}, t[0])
	VCVTDQ2PS(t[0], t[0])
	VFMADD231PS(Mem{Base: x}, t[0], acc[0])
	ADDQ(Imm(8), w)
	ADDQ(Imm(32), x)
	SUBQ(Imm(8), n)
	JMP(LabelRef("dotI8_single"))
	Label("dotI8_done")
	fold(acc, VADDPS)
	hreduce(acc[0], VADDPS)
	VZEROUPPER()
	Store(acc[0].AsX(), ReturnIndex(0))
	RET()
}

func dequantI8() {
	TEXT("dequantI8AVX2", NOSPLIT, "func(dst []float32, src []int8, s float32)")
	Pragma("noescape")
	Doc("dequantI8AVX2 writes dst[i] = src[i]·s for the first len(src)&^7",
		"elements; len(dst) ≥ len(src). The caller converts the last len(src)%8.")
	src, n := loadSlice("src")
	dst := Load(Param("dst").Base(), GP64())
	sc := YMM()
	VBROADCASTSS(Load(Param("s"), XMM()), sc)
	const unroll = 4
	t := ymms(unroll)
	ANDQ(I32(-8), n)
	Label("dequantI8_block")
	CMPQ(n, U32(8*unroll))
	JL(LabelRef("dequantI8_single"))
	for u := 0; u < unroll; u++ {
		VPMOVSXBD(Mem{Base: src, Disp: 8 * u}, t[u])
		VCVTDQ2PS(t[u], t[u])
		VMULPS(sc, t[u], t[u])
		VMOVUPS(t[u], Mem{Base: dst, Disp: 32 * u})
	}
	ADDQ(U32(8*unroll), src)
	ADDQ(U32(32*unroll), dst)
	SUBQ(U32(8*unroll), n)
	JMP(LabelRef("dequantI8_block"))
	Label("dequantI8_single")
	TESTQ(n, n)
	JZ(LabelRef("dequantI8_done"))
	VPMOVSXBD(Mem{Base: src}, t[0])
	VCVTDQ2PS(t[0], t[0])
	VMULPS(sc, t[0], t[0])
	VMOVUPS(t[0], Mem{Base: dst})
	ADDQ(Imm(8), src)
	ADDQ(Imm(32), dst)
	SUBQ(Imm(8), n)
	JMP(LabelRef("dequantI8_single"))
	Label("dequantI8_done")
	VZEROUPPER()
	RET()
}

func sum() {
	TEXT("sumAVX2", NOSPLIT, "func(x []float32) float32")
	Pragma("noescape")
	Doc("sumAVX2 returns Σ x[i].")
	x, n := loadSlice("x")
	// Two loads per cycle against the add latency of 3.
	acc := zeroed(8)
	loop(8, n, []reg.Register{x}, func(k int) {
		for u := 0; u < k; u++ {
			VADDPS(Mem{Base: x, Disp: 32 * u}, acc[u], acc[u])
		}
	}, func(mask reg.VecVirtual) {
		t := YMM()
		VMASKMOVPS(Mem{Base: x}, mask, t)
		VADDPS(t, acc[1], acc[1])
	}, "sum")
	fold(acc, VADDPS)
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
	acc := ymms(4)
	for _, a := range acc {
		VMOVUPS(negInf, a)
	}
	t := ymms(4)
	// VMAXPS returns its first (Go order) operand when either is NaN, so
	// with the accumulator there a NaN element leaves it unchanged; the
	// accumulators start at -Inf and never become NaN.
	loop(8, n, []reg.Register{x}, func(k int) {
		for u := 0; u < k; u++ {
			VMOVUPS(Mem{Base: x, Disp: 32 * u}, t[u%4])
			VMAXPS(acc[u%4], t[u%4], acc[u%4])
		}
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: x}, mask, t[0])
		// Masked-off lanes load as 0, which could exceed the true maximum.
		VMOVUPS(negInf, t[1])
		VBLENDVPS(mask, t[0], t[1], t[0])
		VMAXPS(acc[1], t[0], acc[1])
	}, "max")
	fold(acc, VMAXPS)
	hreduce(acc[0], VMAXPS)
	VZEROUPPER()
	Store(acc[0].AsX(), ReturnIndex(0))
	RET()
}

func axpy() {
	TEXT("axpyAVX2", NOSPLIT, "func(alpha float32, x, y []float32)")
	Pragma("noescape")
	Doc("axpyAVX2 computes y[i] += alpha·x[i]; len(y) ≥ len(x).")
	a := YMM()
	VBROADCASTSS(Load(Param("alpha"), XMM()), a)
	x, n := loadSlice("x")
	y := Load(Param("y").Base(), GP64())
	t := ymms(4)
	loop(4, n, []reg.Register{x, y}, func(k int) {
		for u := 0; u < k; u++ {
			VMOVUPS(Mem{Base: y, Disp: 32 * u}, t[u])
			VFMADD231PS(Mem{Base: x, Disp: 32 * u}, a, t[u])
			VMOVUPS(t[u], Mem{Base: y, Disp: 32 * u})
		}
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: x}, mask, t[0])
		VMASKMOVPS(Mem{Base: y}, mask, t[1])
		VFMADD231PS(t[0], a, t[1])
		VMASKMOVPS(t[1], mask, Mem{Base: y})
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
	t := ymms(4)
	loop(4, n, []reg.Register{x}, func(k int) {
		for u := 0; u < k; u++ {
			VMULPS(Mem{Base: x, Disp: 32 * u}, a, t[u])
			VMOVUPS(t[u], Mem{Base: x, Disp: 32 * u})
		}
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: x}, mask, t[0])
		VMULPS(t[0], a, t[0])
		VMASKMOVPS(t[0], mask, Mem{Base: x})
	}, "scale")
	VZEROUPPER()
	RET()
}

// Constants of exp, the same as in expScalar (vec_generic.go, which
// documents the algorithm); all but the clamp bounds are memory operands,
// which leaves registers for several vectors in flight.
var (
	expLog2e, expLn2Hi, expLn2Lo, expBias Mem
	expC6, expC5, expC4, expC3, expC2     Mem
	vecOne, expLoMem, expHiMem            Mem
)

func expConstData() {
	if expLog2e.Symbol.Name != "" {
		return
	}
	expLog2e = f32("vecExpLog2e", 1.44269504088896341)
	expLn2Hi = f32("vecExpLn2Hi", 0.693359375)
	expLn2Lo = f32("vecExpLn2Lo", -2.12194440e-4)
	expC6 = f32("vecExpC6", 1.3814191e-3)
	expC5 = f32("vecExpC5", 8.368914e-3)
	expC4 = f32("vecExpC4", 4.1668408e-2)
	expC3 = f32("vecExpC3", 1.666652e-1)
	expC2 = f32("vecExpC2", 4.9999994e-1)
	vecOne = f32("vecOne", 1)
	expBias = bcast("vecExpBias", 127)
	expLoMem = f32("vecExpLo", -104)
	expHiMem = f32("vecExpHi", 89)
}

// expState holds the registers of up to expUnroll vectors under exp.
type expState struct {
	lo, hi     reg.VecVirtual // clamp bounds: registers, for the operand order
	x, p, k, h []reg.VecVirtual
}

const expUnroll = 3

func newExpState() *expState {
	s := &expState{lo: YMM(), hi: YMM()}
	VMOVUPS(expLoMem, s.lo)
	VMOVUPS(expHiMem, s.hi)
	s.x, s.p, s.k, s.h = ymms(expUnroll), ymms(expUnroll), ymms(expUnroll), ymms(expUnroll)
	return s
}

// exp replaces x[0:k] by their exponentials, lane-wise. Each step is
// emitted for all k vectors before the next, so independent work sits side
// by side; on the Zen 4 development machine this measured the same as one
// vector after another (about 9 cycles per vector either way, and the same
// with Estrin's scheme or all constants in registers), so the layout is
// free to change.
//
// x is first clamped to [-104, 89], where every step below is exact or
// harmless: e^-104 rounds to 0 and e^89 to +Inf by themselves, so no lane
// needs a blend. The clamps return x when it is NaN (operand order), and a
// NaN lane stays NaN through the rest: VCVTPS2DQ turns it into 0x80000000,
// whose two scale factors come out as 1.0 and a zero exponent increment.
func (s *expState) exp(k int) {
	each := func(f func(i int)) {
		for i := 0; i < k; i++ {
			f(i)
		}
	}
	x, p, kk, h := s.x, s.p, s.k, s.h
	each(func(i int) { VMAXPS(x[i], s.lo, x[i]) })
	each(func(i int) { VMINPS(x[i], s.hi, x[i]) })
	// k = round(x·log2e), r = x − k·ln2 in two steps (Cody–Waite).
	each(func(i int) { VMULPS(expLog2e, x[i], kk[i]) })
	each(func(i int) { VROUNDPS(Imm(8), kk[i], kk[i]) }) // nearest-even, no precision exception
	each(func(i int) { VFNMADD231PS(expLn2Hi, kk[i], x[i]) })
	each(func(i int) { VFNMADD231PS(expLn2Lo, kk[i], x[i]) })
	each(func(i int) { VCVTPS2DQ(kk[i], kk[i]) })
	// p = e^r, Horner with FMA.
	each(func(i int) { VMOVUPS(expC6, p[i]) })
	for _, c := range []Mem{expC5, expC4, expC3, expC2, vecOne, vecOne} {
		each(func(i int) { VFMADD213PS(c, x[i], p[i]) })
	}
	// p·2^k with k ∈ [-150, 128] split as k = h + (k−h), h = k>>1: adding
	// k−h to p's exponent field is exact (the result is normal), and the
	// multiplication by 2^h rounds once, so subnormal results are correctly
	// rounded from p and overflow gives +Inf.
	each(func(i int) { VPSRAD(Imm(1), kk[i], h[i]) })
	each(func(i int) { VPSUBD(h[i], kk[i], kk[i]) })
	each(func(i int) { VPADDD(expBias, h[i], h[i]) })
	each(func(i int) { VPSLLD(Imm(23), h[i], h[i]) })
	each(func(i int) { VPSLLD(Imm(23), kk[i], kk[i]) })
	each(func(i int) { VPADDD(kk[i], p[i], p[i]) })
	each(func(i int) { VMULPS(h[i], p[i], x[i]) })
}

func exp() {
	expConstData()
	TEXT("expAVX2", NOSPLIT, "func(dst, src []float32)")
	Pragma("noescape")
	Doc("expAVX2 computes dst[i] = exp(src[i]); len(dst) ≥ len(src).")
	dst := Load(Param("dst").Base(), GP64())
	src, n := loadSlice("src")
	e := newExpState()
	loop(expUnroll, n, []reg.Register{src, dst}, func(k int) {
		for u := 0; u < k; u++ {
			VMOVUPS(Mem{Base: src, Disp: 32 * u}, e.x[u])
		}
		e.exp(k)
		for u := 0; u < k; u++ {
			VMOVUPS(e.x[u], Mem{Base: dst, Disp: 32 * u})
		}
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: src}, mask, e.x[0])
		e.exp(1)
		VMASKMOVPS(e.x[0], mask, Mem{Base: dst})
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
	e := newExpState()
	acc := zeroed(1)[0]
	loop(expUnroll, n, []reg.Register{src, dst}, func(k int) {
		for u := 0; u < k; u++ {
			VMOVUPS(Mem{Base: src, Disp: 32 * u}, e.x[u])
			VSUBPS(m, e.x[u], e.x[u])
		}
		e.exp(k)
		for u := 0; u < k; u++ {
			VMOVUPS(e.x[u], Mem{Base: dst, Disp: 32 * u})
			VADDPS(e.x[u], acc, acc)
		}
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: src}, mask, e.x[0])
		VSUBPS(m, e.x[0], e.x[0])
		e.exp(1)
		VMASKMOVPS(e.x[0], mask, Mem{Base: dst})
		// Masked-off lanes hold exp(−m), not 0.
		VANDPS(mask, e.x[0], e.x[0])
		VADDPS(e.x[0], acc, acc)
	}, "expsubsum")
	hreduce(acc, VADDPS)
	VZEROUPPER()
	Store(acc.AsX(), ReturnIndex(0))
	RET()
}

// gelu emits GELU's forward pass in its sigmoid form: s = 1/(1 + e^(−2u)),
// u = √(2/π)·(x + 0.044715·x³), and y = x·s, keeping s for the backward
// pass. The tail goes through masked loads and stores, so every element is
// computed by the same instructions wherever a caller cuts the slice.
func gelu() {
	expConstData()
	m2c := f32("vecGeluM2C", float32(-2*0.7978845608028654))
	k := f32("vecGeluK", 0.044715)
	TEXT("geluFwdAVX2", NOSPLIT, "func(y, s, x []float32)")
	Pragma("noescape")
	Doc("geluFwdAVX2 computes s[i] = 1/(1 + exp(−2u(x[i]))) and y[i] = x[i]·s[i];",
		"len(y), len(s) ≥ len(x). y may alias x.")
	y := Load(Param("y").Base(), GP64())
	sp := Load(Param("s").Base(), GP64())
	x, n := loadSlice("x")
	e := newExpState()
	kr := YMM()
	VMOVUPS(k, kr)
	const unroll = 2
	xs := ymms(unroll)
	// arg computes the exponent −2u of xs[u] into e.x[u].
	arg := func(u int) {
		VMULPS(xs[u], xs[u], e.x[u])    // x²
		VFMADD213PS(vecOne, kr, e.x[u]) // 1 + k·x²
		VMULPS(xs[u], e.x[u], e.x[u])   // x + k·x³
		VMULPS(m2c, e.x[u], e.x[u])     // −2u
	}
	// sig turns e.x[u] = e^(−2u) into s, and xs[u] into y.
	sig := func(u int) {
		VADDPS(vecOne, e.x[u], e.x[u])
		VMOVUPS(vecOne, e.p[u])
		VDIVPS(e.x[u], e.p[u], e.x[u]) // s = 1/(1 + e)
		VMULPS(e.x[u], xs[u], xs[u])   // y = x·s
	}
	loop(unroll, n, []reg.Register{x, y, sp}, func(kk int) {
		for u := 0; u < kk; u++ {
			VMOVUPS(Mem{Base: x, Disp: 32 * u}, xs[u])
			arg(u)
		}
		e.exp(kk)
		for u := 0; u < kk; u++ {
			sig(u)
			VMOVUPS(e.x[u], Mem{Base: sp, Disp: 32 * u})
			VMOVUPS(xs[u], Mem{Base: y, Disp: 32 * u})
		}
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: x}, mask, xs[0])
		arg(0)
		e.exp(1)
		sig(0)
		VMASKMOVPS(e.x[0], mask, Mem{Base: sp})
		VMASKMOVPS(xs[0], mask, Mem{Base: y})
	}, "gelu")
	VZEROUPPER()
	RET()
}

// adamw is the fused AdamW update (see AdamW in internal/kernels/adamw.go,
// whose Go loop it reproduces bit for bit): every product and sum rounds
// separately, as the Go code's explicit conversions do, so no FMA.
func adamw() {
	TEXT("adamwAVX2", NOSPLIT, "func(p, g, m, v []float32, k *float32)")
	Pragma("noescape")
	Doc("adamwAVX2 applies one AdamW step to p, m and v from the gradient g;",
		"k points at the nine constants of AdamWParams, in field order.",
		"len(g), len(m), len(v) ≥ len(p).")
	kp := Load(Param("k"), GP64())
	c := ymms(9) // gscale, decay, b1, c1, b2, c2, stepSize, invBC2Sqrt, eps
	for i := range c {
		VBROADCASTSS(Mem{Base: kp, Disp: 4 * i}, c[i])
	}
	gs, decay, b1, c1, b2, c2, step, inv, eps := c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
	p, n := loadSlice("p")
	g := Load(Param("g").Base(), GP64())
	m := Load(Param("m").Base(), GP64())
	v := Load(Param("v").Base(), GP64())
	t := ymms(5)
	gv, pv, mv, vv, tv := t[0], t[1], t[2], t[3], t[4]
	// body computes one vector from registers loaded by load and stored by store.
	body := func() {
		VMULPS(gs, gv, gv)
		VMULPS(decay, pv, pv)
		VMULPS(b1, mv, mv)
		VMULPS(c1, gv, tv)
		VADDPS(tv, mv, mv)
		VMULPS(b2, vv, vv)
		VMULPS(c2, gv, tv)
		VMULPS(gv, tv, tv)
		VADDPS(tv, vv, vv)
		VSQRTPS(vv, tv)
		VMULPS(inv, tv, tv)
		VADDPS(eps, tv, tv)
		VMULPS(step, mv, gv) // g is dead: stepSize·m
		VDIVPS(tv, gv, gv)
		VSUBPS(gv, pv, pv)
	}
	loop(1, n, []reg.Register{p, g, m, v}, func(k int) {
		VMOVUPS(Mem{Base: g}, gv)
		VMOVUPS(Mem{Base: p}, pv)
		VMOVUPS(Mem{Base: m}, mv)
		VMOVUPS(Mem{Base: v}, vv)
		body()
		VMOVUPS(mv, Mem{Base: m})
		VMOVUPS(vv, Mem{Base: v})
		VMOVUPS(pv, Mem{Base: p})
	}, func(mask reg.VecVirtual) {
		VMASKMOVPS(Mem{Base: g}, mask, gv)
		VMASKMOVPS(Mem{Base: p}, mask, pv)
		VMASKMOVPS(Mem{Base: m}, mask, mv)
		VMASKMOVPS(Mem{Base: v}, mask, vv)
		body()
		VMASKMOVPS(mv, mask, Mem{Base: m})
		VMASKMOVPS(vv, mask, Mem{Base: v})
		VMASKMOVPS(pv, mask, Mem{Base: p})
	}, "adamw")
	VZEROUPPER()
	RET()
}

// swiglu is the Llama family's gated activation in one pass, as gelu:
// s = σ(g) = 1/(1 + exp(−g)) (saved for the backward pass) and y = g·s·u,
// rounded in the order of swigluFwdGeneric (vec_generic.go's exp aside).
func swiglu() {
	expConstData()
	sign := bcast("vecSignBit", 0x80000000)
	TEXT("swigluFwdAVX2", NOSPLIT, "func(y, s, g, u []float32)")
	Pragma("noescape")
	Doc("swigluFwdAVX2 computes s[i] = 1/(1 + exp(−g[i])) and y[i] = g[i]·s[i]·u[i];",
		"len(y), len(s), len(u) ≥ len(g). y may alias g or u; s aliases nothing.")
	y := Load(Param("y").Base(), GP64())
	sp := Load(Param("s").Base(), GP64())
	up := Load(Param("u").Base(), GP64())
	g, n := loadSlice("g")
	e := newExpState()
	const unroll = 2
	gs := ymms(unroll)
	// sig turns e.x[u] = exp(−g) into s, and gs[u] into g·s (the caller
	// multiplies by u).
	sig := func(u int) {
		VADDPS(vecOne, e.x[u], e.x[u])
		VMOVUPS(vecOne, e.p[u])
		VDIVPS(e.x[u], e.p[u], e.x[u]) // s = 1/(1 + e)
		VMULPS(e.x[u], gs[u], gs[u])   // g·s
	}
	loop(unroll, n, []reg.Register{g, up, y, sp}, func(kk int) {
		for u := 0; u < kk; u++ {
			VMOVUPS(Mem{Base: g, Disp: 32 * u}, gs[u])
			VXORPS(sign, gs[u], e.x[u]) // −g
		}
		e.exp(kk)
		for u := 0; u < kk; u++ {
			sig(u)
			VMULPS(Mem{Base: up, Disp: 32 * u}, gs[u], gs[u])
			VMOVUPS(e.x[u], Mem{Base: sp, Disp: 32 * u})
			VMOVUPS(gs[u], Mem{Base: y, Disp: 32 * u})
		}
	}, func(mask reg.VecVirtual) {
		uv := YMM()
		VMASKMOVPS(Mem{Base: g}, mask, gs[0])
		VMASKMOVPS(Mem{Base: up}, mask, uv)
		VXORPS(sign, gs[0], e.x[0])
		e.exp(1)
		sig(0)
		VMULPS(uv, gs[0], gs[0])
		VMASKMOVPS(e.x[0], mask, Mem{Base: sp})
		VMASKMOVPS(gs[0], mask, Mem{Base: y})
	}, "swiglu")
	VZEROUPPER()
	RET()
}

// swigluGrad emits SwiGLU's two gradients from the saved sigmoid s, each
// set (acc false) or added (acc true): dg = dy·u·s·(1 + g·(1−s)) and
// du = dy·g·s, one routine each (the graph computes them as separate ops).
func swigluGrad() {
	TEXT("swigluGateGradAVX2", NOSPLIT, "func(dg, dy, g, u, s []float32, acc bool)")
	Pragma("noescape")
	Doc("swigluGateGradAVX2 sets (acc false) or adds to (acc true) dg[i] the value",
		"dy[i]·u[i]·s[i]·(1 + g[i]·(1 − s[i])); len(dy), len(g), len(u), len(s) ≥ len(dg).")
	{
		dg, n := loadSlice("dg")
		dy := Load(Param("dy").Base(), GP64())
		g := Load(Param("g").Base(), GP64())
		u := Load(Param("u").Base(), GP64())
		s := Load(Param("s").Base(), GP64())
		accf := Load(Param("acc"), GP8())
		one, sv, t, d, m := YMM(), YMM(), YMM(), YMM(), YMM()
		VMOVUPS(vecOne, one)
		// body computes dg's vector into d from sv, t (g) and d (dy), with
		// m holding u.
		body := func() {
			VMULPS(m, d, d)         // dy·u
			VMULPS(sv, d, d)        // ·s
			VSUBPS(sv, one, sv)     // 1 − s
			VFMADD213PS(one, sv, t) // 1 + g·(1 − s)
			VMULPS(t, d, d)         // ·(1 + g·(1 − s))
		}
		ptrs := []reg.Register{dg, dy, g, u, s}
		for _, add := range []bool{true, false} {
			name := "swdg_set"
			if add {
				name = "swdg_add"
				TESTB(accf, accf)
				JZ(LabelRef("swdg_set_block"))
			}
			loop(1, n, ptrs, func(int) {
				VMOVUPS(Mem{Base: dy}, d)
				VMOVUPS(Mem{Base: u}, m)
				VMOVUPS(Mem{Base: s}, sv)
				VMOVUPS(Mem{Base: g}, t)
				body()
				if add {
					VADDPS(Mem{Base: dg}, d, d)
				}
				VMOVUPS(d, Mem{Base: dg})
			}, func(mask reg.VecVirtual) {
				VMASKMOVPS(Mem{Base: dy}, mask, d)
				VMASKMOVPS(Mem{Base: s}, mask, sv)
				VMASKMOVPS(Mem{Base: g}, mask, t)
				VMASKMOVPS(Mem{Base: u}, mask, m)
				body()
				if add {
					o := YMM()
					VMASKMOVPS(Mem{Base: dg}, mask, o)
					VADDPS(o, d, d)
				}
				VMASKMOVPS(d, mask, Mem{Base: dg})
			}, name)
			VZEROUPPER()
			RET()
		}
	}

	TEXT("swigluUpGradAVX2", NOSPLIT, "func(du, dy, g, s []float32, acc bool)")
	Pragma("noescape")
	Doc("swigluUpGradAVX2 sets (acc false) or adds to (acc true) du[i] the value",
		"dy[i]·g[i]·s[i]; len(dy), len(g), len(s) ≥ len(du).")
	du, n := loadSlice("du")
	dy := Load(Param("dy").Base(), GP64())
	g := Load(Param("g").Base(), GP64())
	s := Load(Param("s").Base(), GP64())
	accf := Load(Param("acc"), GP8())
	d := YMM()
	ptrs := []reg.Register{du, dy, g, s}
	for _, add := range []bool{true, false} {
		name := "swdu_set"
		if add {
			name = "swdu_add"
			TESTB(accf, accf)
			JZ(LabelRef("swdu_set_block"))
		}
		loop(2, n, ptrs, func(k int) {
			for i := 0; i < k; i++ {
				VMOVUPS(Mem{Base: dy, Disp: 32 * i}, d)
				VMULPS(Mem{Base: g, Disp: 32 * i}, d, d)
				VMULPS(Mem{Base: s, Disp: 32 * i}, d, d)
				if add {
					VADDPS(Mem{Base: du, Disp: 32 * i}, d, d)
				}
				VMOVUPS(d, Mem{Base: du, Disp: 32 * i})
			}
		}, func(mask reg.VecVirtual) {
			t, o := YMM(), YMM()
			VMASKMOVPS(Mem{Base: dy}, mask, d)
			VMASKMOVPS(Mem{Base: g}, mask, t)
			VMULPS(t, d, d)
			VMASKMOVPS(Mem{Base: s}, mask, t)
			VMULPS(t, d, d)
			if add {
				VMASKMOVPS(Mem{Base: du}, mask, o)
				VADDPS(o, d, d)
			}
			VMASKMOVPS(d, mask, Mem{Base: du})
		}, name)
		VZEROUPPER()
		RET()
	}
}

// colSums adds a strip of 64 columns of a matrix, row by row, into 64
// sums held in eight YMM registers: the bias gradient's column sums with
// one load per element and no store until the strip's last row (the
// row-by-row axpy loads and stores the sums once per row).
func colSums() {
	TEXT("colSums64AVX2", NOSPLIT, "func(s *float32, m *float32, rows int, ld int)")
	Pragma("noescape")
	Doc(
		"colSums64AVX2 adds m[r·ld+j] into s[j] for j < 64, r = 0, 1, … rows−1 in",
		"order; rows must be positive.",
	)
	s := Load(Param("s"), GP64())
	m := Load(Param("m"), GP64())
	n := Load(Param("rows"), GP64())
	ld := Load(Param("ld"), GP64())
	SHLQ(Imm(2), ld)
	acc := ymms(8)
	for i, a := range acc {
		VMOVUPS(Mem{Base: s, Disp: 32 * i}, a)
	}
	Label("colsums64loop")
	for i, a := range acc {
		VADDPS(Mem{Base: m, Disp: 32 * i}, a, a)
	}
	ADDQ(ld, m)
	DECQ(n)
	JNZ(LabelRef("colsums64loop"))
	for i, a := range acc {
		VMOVUPS(a, Mem{Base: s, Disp: 32 * i})
	}
	VZEROUPPER()
	RET()
}
