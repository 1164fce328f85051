// Package zmmgemm emits what the AVX-512 GEMM micro-kernels share: loading
// their arguments, prefetching the tile of C, zeroing the ZMM accumulators,
// the unrolled k loop with its one-step tail, and the store C = alpha·acc +
// beta·C. A kernel supplies only its k step (sgemm512: broadcast and FMA;
// bf16: broadcast a bf16 pair and VDPBF16PS).
package zmmgemm

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Tile describes a kernel over packed A micro-panels of PanelRows rows and
// B micro-panels of PanelCols columns (one ZMM): AP·PanelRows rows by
// BP·PanelCols columns of C, held in the accumulators Z0…. Its signature
// is func(<K> int, a *T, aStride int, b *T, bStride int, c *float32, ldc
// int, alpha, beta float32).
type Tile struct {
	AP, BP               int
	PanelRows, PanelCols int
	Unroll               int    // k steps per trip of the main loop
	PrefetchB            int    // bytes ahead each B micro-panel stream is prefetched
	K                    string // the name of the k-count parameter
	StepName             string // what one k step is, for the loop's comment ("k steps")
	// Bias makes the accumulators start from a row vector, the parameter
	// bias (BP·PanelCols floats, added to every row of the tile), instead
	// of zero: C = alpha·(A·B + bias) + beta·C.
	Bias bool
	// DirectA makes the kernel read A where it is stored instead of from
	// packed micro-panels: AP·PanelRows rows, row r at a + r·aStride
	// floats, k steps contiguous (a matrix that is not transposed).
	DirectA bool
	// DirectAT is DirectA for a transposed A: k step p of the tile's
	// AP·PanelRows rows is the contiguous run a[p·aStride:], as a packed
	// panel's is a[p·PanelRows:].
	DirectAT bool
}

// Operands are the registers and addresses a k step works on.
type Operands struct {
	Acc  func(r, h int) VecPhysical // accumulator of row r, B micro-panel h
	AMem func(i, r int) Mem         // row r of A at step i of a trip
	BMem func(i, h int) Mem         // B micro-panel h at step i of a trip
}

// Emit emits the kernel's body after its TEXT and Doc; step emits k step i
// of a trip (the tail runs step 0 once per remaining step).
func Emit(t Tile, step func(i int, o Operands)) {
	mr, bp := t.AP*t.PanelRows, t.BP
	acc := func(r, h int) VecPhysical { return zmm(r*bp + h) }

	k, a, as, b, bs := RBX, RSI, R12, RDI, R13
	Load(Param(t.K), k)
	MOVQ(ParamAddr("a"), a)
	Load(Param("aStride"), as)
	SHLQ(Imm(2), as)
	MOVQ(ParamAddr("b"), b)
	Load(Param("bStride"), bs)
	SHLQ(Imm(2), bs)

	// The tile of C is read (beta != 0) and written only after the k
	// loop; it is often in no cache (C is megabytes, and each KC step of
	// a product passes over all of it). Prefetching its lines now hides
	// those misses behind the loop: without it the epilogue stalls on up
	// to 24 misses per call.
	cp, ldc := R8, R9
	MOVQ(ParamAddr("c"), cp)
	Load(Param("ldc"), ldc)
	SHLQ(Imm(2), ldc)
	for r := 0; r < mr; r++ {
		for h := 0; h < bp; h++ {
			PREFETCHT0(Mem{Base: cp, Disp: 64 * h})
		}
		if r < mr-1 {
			ADDQ(ldc, cp)
		}
	}

	if t.Bias {
		// The bias row seeds every row's accumulators: a linear layer's
		// bias costs no pass over C.
		bias := R10
		MOVQ(ParamAddr("bias"), bias)
		for h := 0; h < bp; h++ {
			VMOVUPS(Mem{Base: bias, Disp: 64 * h}, zmm(h))
		}
		for r := 1; r < mr; r++ {
			for h := 0; h < bp; h++ {
				VMOVAPS(zmm(h), acc(r, h))
			}
		}
	} else {
		for r := 0; r < mr; r++ {
			for h := 0; h < bp; h++ {
				VPXORD(acc(r, h), acc(r, h), acc(r, h))
			}
		}
	}

	// With DirectA, rows 0–3, 4–7 and 8–11 of A are addressed from three
	// bases, each row as base + (0, 1, 2 or 3)·stride.
	aRows := []Register{a}
	var as3 Register
	if t.DirectAT {
		as3 = R11
		LEAQ(Mem{Base: as, Index: as, Scale: 2}, as3)
	}
	if t.DirectA {
		as3 = R11
		LEAQ(Mem{Base: as, Index: as, Scale: 2}, as3)
		for q := 1; q*4 < mr; q++ {
			base := []Register{RCX, RDX}[q-1]
			LEAQ(Mem{Base: aRows[q-1], Index: as, Scale: 4}, base)
			aRows = append(aRows, base)
		}
	}
	ops := Operands{
		Acc: acc,
		AMem: func(i, r int) Mem {
			// base + q·stride for q < 4: as, as·2 and as3 = 3·as.
			strided := func(m Mem, q int) Mem {
				switch q {
				case 1:
					m.Index, m.Scale = as, 1
				case 2:
					m.Index, m.Scale = as, 2
				case 3:
					m.Index, m.Scale = as3, 1
				}
				return m
			}
			if t.DirectAT {
				return strided(Mem{Base: a, Disp: r * 4}, i)
			}
			if t.DirectA {
				return strided(Mem{Base: aRows[r/4], Disp: i * 4}, r%4)
			}
			m := Mem{Base: a, Disp: (i*t.PanelRows + r%t.PanelRows) * 4}
			if r >= t.PanelRows {
				m.Index, m.Scale = as, 1
			}
			return m
		},
		BMem: func(i, h int) Mem {
			m := Mem{Base: b, Disp: i * t.PanelCols * 4}
			if h > 0 {
				m.Index, m.Scale = bs, 1
			}
			return m
		},
	}

	Comment(fmt.Sprintf("Main loop: %d %s per trip.", t.Unroll, t.StepName))
	Label("loop")
	CMPQ(k, Imm(uint64(t.Unroll)))
	JL(LabelRef("tail"))
	for i := 0; i < t.Unroll; i++ {
		for h := 0; h < bp; h++ {
			pm := ops.BMem(i, h)
			pm.Disp += t.PrefetchB
			PREFETCHT0(pm)
		}
		step(i, ops)
	}
	aStep := t.PanelRows * 4 // bytes of A per k step
	if t.DirectA {
		aStep = 4
	}
	if t.DirectAT {
		if t.Unroll != 4 {
			panic("zmmgemm: DirectAT addresses 4 k steps per trip")
		}
		LEAQ(Mem{Base: a, Index: as, Scale: 4}, a)
	} else {
		for _, base := range aRows {
			ADDQ(U32(t.Unroll*aStep), base)
		}
	}
	ADDQ(U32(t.Unroll*t.PanelCols*4), b)
	SUBQ(Imm(uint64(t.Unroll)), k)
	JMP(LabelRef("loop"))

	Label("tail")
	TESTQ(k, k)
	JZ(LabelRef("store"))
	step(0, ops)
	if t.DirectAT {
		ADDQ(as, a)
	} else {
		for _, base := range aRows {
			ADDQ(Imm(uint64(aStep)), base)
		}
	}
	ADDQ(Imm(uint64(t.PanelCols*4)), b)
	DECQ(k)
	JMP(LabelRef("tail"))

	Label("store")
	MOVQ(ParamAddr("c"), cp)
	alpha, beta := Z24, Z25
	VBROADCASTSS(ParamAddr("alpha"), alpha)
	// beta == 0 (either sign) selects the store-only path: C may hold NaNs.
	betaBits := EAX
	MOVL(ParamAddr("beta"), betaBits)
	SHLL(Imm(1), betaBits)
	JZ(LabelRef("overwrite"))
	VBROADCASTSS(ParamAddr("beta"), beta)
	for r := 0; r < mr; r++ {
		for h := 0; h < bp; h++ {
			m := Mem{Base: cp, Disp: 64 * h}
			VMULPS(alpha, acc(r, h), acc(r, h))
			VFMADD231PS(m, beta, acc(r, h))
			VMOVUPS(acc(r, h), m)
		}
		if r < mr-1 {
			ADDQ(ldc, cp)
		}
	}
	VZEROUPPER()
	RET()

	Label("overwrite")
	for r := 0; r < mr; r++ {
		for h := 0; h < bp; h++ {
			VMULPS(alpha, acc(r, h), acc(r, h))
			VMOVUPS(acc(r, h), Mem{Base: cp, Disp: 64 * h})
		}
		if r < mr-1 {
			ADDQ(ldc, cp)
		}
	}
	VZEROUPPER()
	RET()
}

// zmm returns accumulator i: Z0…Z23 (Z24–Z31 are the kernels' operands).
func zmm(i int) VecPhysical {
	return []VecPhysical{
		Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11,
		Z12, Z13, Z14, Z15, Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23,
	}[i]
}

// ParamAddr returns the stack address of a scalar argument, so that it can
// be a memory operand (VBROADCASTSS takes no general register).
func ParamAddr(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}
