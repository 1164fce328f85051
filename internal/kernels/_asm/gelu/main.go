// Command gelu generates the vectorized GELU derivative of internal/kernels
// (gelu_amd64.s, and its Go declarations in gelu_amd64_stubs.go), in an
// AVX2+FMA (YMM) and an AVX-512 (ZMM) form, and LayerNorm's γ-gradient
// accumulation (AccCentered):
//
//	cd internal/kernels/_asm && go run ./gelu -out ../gelu_amd64.s -stubs ../gelu_amd64_stubs.go -pkg kernels
//
// Each element computes g = s + c2·x·s·(1−s)·(1 + k3·x²) from x and the
// saved sigmoid s, then dx = dy·g or dx += dy·g: nine vector operations
// for four streams, which the scalar Go loop spends a multiple of.
package main

import (
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The constants of the derivative (c2 = 2·√(2/π), k3 = 3·0.044715) are
// arguments, so that the Go and assembly forms share one definition.
func main() {
	ConstraintExpr("amd64,!purego")
	geluGrad("geluGradAVX2", 256)
	geluGrad("geluGradAVX512", 512)
	accCentered()
	Generate()
}

func geluGrad(name string, bits int) {
	lanes := bits / 32
	TEXT(name, NOSPLIT, "func(n int, dx, dy, x, s *float32, c2, k3 float32, acc bool)")
	Pragma("noescape")
	Doc(
		fmt.Sprintf("%s sets (acc false) or adds to (acc true) dx[i] the value", name),
		"dy[i]·(s[i] + c2·x[i]·s[i]·(1−s[i])·(1 + k3·x[i]²)) for i < n,",
		fmt.Sprintf("with %d-bit vectors; n must be a positive multiple of %d.", bits, lanes),
	)
	n, dx, dy, x, s := GP64(), GP64(), GP64(), GP64(), GP64()
	Load(Param("n"), n)
	Load(Param("dx"), dx)
	Load(Param("dy"), dy)
	Load(Param("x"), x)
	Load(Param("s"), s)
	var c2, k3, one, xv, sv, t, u, d VecVirtual
	vec := func() VecVirtual {
		if bits == 512 {
			return ZMM()
		}
		return YMM()
	}
	c2, k3, one, xv, sv, t, u, d = vec(), vec(), vec(), vec(), vec(), vec(), vec(), vec()
	VBROADCASTSS(paramAddr("c2"), c2)
	VBROADCASTSS(paramAddr("k3"), k3)
	oneBits := GP32()
	MOVL(U32(math.Float32bits(1)), oneBits)
	MOVD(oneBits, one.AsX())
	VBROADCASTSS(one.AsX(), one)
	accf := GP8()
	Load(Param("acc"), accf)
	i := GP64()
	XORQ(i, i)

	body := func(label string, add bool) {
		Label(label)
		m := func(p GPVirtual) Mem { return Mem{Base: p, Index: i, Scale: 4} }
		VMOVUPS(m(x), xv)
		VMOVUPS(m(s), sv)
		VMULPS(xv, xv, t)       // x²
		VFMADD213PS(one, k3, t) // 1 + k3·x²
		VMOVUPS(sv, u)          //
		VFNMADD231PS(sv, sv, u) // s − s² = s·(1−s)
		VMULPS(u, t, t)         // s·(1−s)·(1 + k3·x²)
		VMULPS(xv, t, t)        // ·x
		VFMADD213PS(sv, c2, t)  // g = c2·t + s
		VMOVUPS(m(dy), d)       //
		if add {
			VFMADD213PS(m(dx), d, t) // dx + dy·g
		} else {
			VMULPS(d, t, t)
		}
		VMOVUPS(t, m(dx))
		ADDQ(Imm(uint64(lanes)), i)
		CMPQ(i, n)
		JL(LabelRef(label))
	}
	TESTB(accf, accf)
	JZ(LabelRef("set"))
	body("add", true)
	VZEROUPPER()
	RET()
	body("set", false)
	VZEROUPPER()
	RET()
}

// paramAddr returns the stack address of a scalar argument, so that it can be
// a memory operand.
func paramAddr(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

// accCentered emits dst[i] += a[i]·(x[i] − mu)·rs over n elements, n a
// positive multiple of 8: LayerNorm's γ gradient, one row at a time.
func accCentered() {
	TEXT("accCenteredAVX2", NOSPLIT, "func(n int, dst, a, x *float32, mu, rs float32)")
	Pragma("noescape")
	Doc(
		"accCenteredAVX2 adds a[i]·(x[i] − mu)·rs to dst[i] for i < n;",
		"n must be a positive multiple of 8.",
	)
	n, dst, a, x := GP64(), GP64(), GP64(), GP64()
	Load(Param("n"), n)
	Load(Param("dst"), dst)
	Load(Param("a"), a)
	Load(Param("x"), x)
	mu, rs, t, d := YMM(), YMM(), YMM(), YMM()
	VBROADCASTSS(paramAddr("mu"), mu)
	VBROADCASTSS(paramAddr("rs"), rs)
	i := GP64()
	XORQ(i, i)
	Label("acc")
	m := func(p GPVirtual) Mem { return Mem{Base: p, Index: i, Scale: 4} }
	VMOVUPS(m(x), t)
	VSUBPS(mu, t, t)      // x − mu
	VMULPS(m(a), t, t)    // a·(x − mu)
	VMOVUPS(m(dst), d)    //
	VFMADD231PS(rs, t, d) // dst + a·(x − mu)·rs
	VMOVUPS(d, m(dst))
	ADDQ(Imm(8), i)
	CMPQ(i, n)
	JL(LabelRef("acc"))
	VZEROUPPER()
	RET()
}
