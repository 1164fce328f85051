//go:build amd64 && !purego

#include "textflag.h"

// func kern6x16(n, k int, a *float32, sai, sak int, b *float32, ldb int, c *float32, ldc int, mode int, p, dv *float32)
//
// Six rows of C = op(A·B), 16 columns at a time: twelve YMM accumulators
// (rows × two 8-float halves), two B vectors and one broadcast A value per
// step of k.
//
// Registers: AX a (running), BX b (running), CX k count, DX sai·4,
// SI 3·sai·4, DI 5·sai·4, R8 sak·4, R9 ldb·4, R10 C block, R11 columns left,
// R12 a base, R13 b column base.
TEXT ·kern6x16(SB), NOSPLIT, $0-96
	MOVQ n+0(FP), R11
	MOVQ a+16(FP), R12
	MOVQ sai+24(FP), DX
	SHLQ $2, DX
	LEAQ (DX)(DX*2), SI
	LEAQ (DX)(DX*4), DI
	MOVQ sak+32(FP), R8
	SHLQ $2, R8
	MOVQ b+40(FP), R13
	MOVQ ldb+48(FP), R9
	SHLQ $2, R9
	MOVQ c+56(FP), R10

colblock:
	MOVQ R12, AX
	MOVQ R13, BX
	MOVQ k+8(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

kloop:
	VMOVUPS      (BX), Y12
	VMOVUPS      32(BX), Y13
	VBROADCASTSS (AX), Y14
	VFMADD231PS  Y12, Y14, Y0
	VFMADD231PS  Y13, Y14, Y1
	VBROADCASTSS (AX)(DX*1), Y15
	VFMADD231PS  Y12, Y15, Y2
	VFMADD231PS  Y13, Y15, Y3
	VBROADCASTSS (AX)(DX*2), Y14
	VFMADD231PS  Y12, Y14, Y4
	VFMADD231PS  Y13, Y14, Y5
	VBROADCASTSS (AX)(SI*1), Y15
	VFMADD231PS  Y12, Y15, Y6
	VFMADD231PS  Y13, Y15, Y7
	VBROADCASTSS (AX)(DX*4), Y14
	VFMADD231PS  Y12, Y14, Y8
	VFMADD231PS  Y13, Y14, Y9
	VBROADCASTSS (AX)(DI*1), Y15
	VFMADD231PS  Y12, Y15, Y10
	VFMADD231PS  Y13, Y15, Y11
	ADDQ         R8, AX
	ADDQ         R9, BX
	DECQ         CX
	JNZ          kloop

	// Epilogue: BX walks the rows of the C block, CX is ldc·4.
	MOVQ ldc+64(FP), CX
	SHLQ $2, CX
	MOVQ R10, BX
	MOVQ mode+72(FP), AX
	CMPQ AX, $1
	JEQ  addmode
	CMPQ AX, $2
	JEQ  dsmode
	CMPQ AX, $3
	JEQ  dsaddmode

	VMOVUPS Y0, (BX)
	VMOVUPS Y1, 32(BX)
	ADDQ    CX, BX
	VMOVUPS Y2, (BX)
	VMOVUPS Y3, 32(BX)
	ADDQ    CX, BX
	VMOVUPS Y4, (BX)
	VMOVUPS Y5, 32(BX)
	ADDQ    CX, BX
	VMOVUPS Y6, (BX)
	VMOVUPS Y7, 32(BX)
	ADDQ    CX, BX
	VMOVUPS Y8, (BX)
	VMOVUPS Y9, 32(BX)
	ADDQ    CX, BX
	VMOVUPS Y10, (BX)
	VMOVUPS Y11, 32(BX)
	JMP     next

addmode:
	VADDPS  (BX), Y0, Y0
	VADDPS  32(BX), Y1, Y1
	VMOVUPS Y0, (BX)
	VMOVUPS Y1, 32(BX)
	ADDQ    CX, BX
	VADDPS  (BX), Y2, Y2
	VADDPS  32(BX), Y3, Y3
	VMOVUPS Y2, (BX)
	VMOVUPS Y3, 32(BX)
	ADDQ    CX, BX
	VADDPS  (BX), Y4, Y4
	VADDPS  32(BX), Y5, Y5
	VMOVUPS Y4, (BX)
	VMOVUPS Y5, 32(BX)
	ADDQ    CX, BX
	VADDPS  (BX), Y6, Y6
	VADDPS  32(BX), Y7, Y7
	VMOVUPS Y6, (BX)
	VMOVUPS Y7, 32(BX)
	ADDQ    CX, BX
	VADDPS  (BX), Y8, Y8
	VADDPS  32(BX), Y9, Y9
	VMOVUPS Y8, (BX)
	VMOVUPS Y9, 32(BX)
	ADDQ    CX, BX
	VADDPS  (BX), Y10, Y10
	VADDPS  32(BX), Y11, Y11
	VMOVUPS Y10, (BX)
	VMOVUPS Y11, 32(BX)
	JMP     next

dsaddmode:
	// acc += C, then fall into the DS epilogue with BX back at the block.
	VADDPS  (BX), Y0, Y0
	VADDPS  32(BX), Y1, Y1
	ADDQ    CX, BX
	VADDPS  (BX), Y2, Y2
	VADDPS  32(BX), Y3, Y3
	ADDQ    CX, BX
	VADDPS  (BX), Y4, Y4
	VADDPS  32(BX), Y5, Y5
	ADDQ    CX, BX
	VADDPS  (BX), Y6, Y6
	VADDPS  32(BX), Y7, Y7
	ADDQ    CX, BX
	VADDPS  (BX), Y8, Y8
	VADDPS  32(BX), Y9, Y9
	ADDQ    CX, BX
	VADDPS  (BX), Y10, Y10
	VADDPS  32(BX), Y11, Y11
	MOVQ R10, BX

dsmode:
	// C = P ∘ (acc − dv[row]); AX walks P like BX walks C.
	MOVQ         dv+88(FP), AX
	VBROADCASTSS (AX), Y12
	VBROADCASTSS 4(AX), Y13
	VBROADCASTSS 8(AX), Y14
	VBROADCASTSS 12(AX), Y15
	VSUBPS       Y12, Y0, Y0
	VSUBPS       Y12, Y1, Y1
	VSUBPS       Y13, Y2, Y2
	VSUBPS       Y13, Y3, Y3
	VSUBPS       Y14, Y4, Y4
	VSUBPS       Y14, Y5, Y5
	VSUBPS       Y15, Y6, Y6
	VSUBPS       Y15, Y7, Y7
	VBROADCASTSS 16(AX), Y12
	VBROADCASTSS 20(AX), Y13
	VSUBPS       Y12, Y8, Y8
	VSUBPS       Y12, Y9, Y9
	VSUBPS       Y13, Y10, Y10
	VSUBPS       Y13, Y11, Y11
	MOVQ         p+80(FP), AX
	ADDQ         R10, AX
	SUBQ         c+56(FP), AX
	VMULPS  (AX), Y0, Y0
	VMULPS  32(AX), Y1, Y1
	VMOVUPS Y0, (BX)
	VMOVUPS Y1, 32(BX)
	ADDQ    CX, BX
	ADDQ    CX, AX
	VMULPS  (AX), Y2, Y2
	VMULPS  32(AX), Y3, Y3
	VMOVUPS Y2, (BX)
	VMOVUPS Y3, 32(BX)
	ADDQ    CX, BX
	ADDQ    CX, AX
	VMULPS  (AX), Y4, Y4
	VMULPS  32(AX), Y5, Y5
	VMOVUPS Y4, (BX)
	VMOVUPS Y5, 32(BX)
	ADDQ    CX, BX
	ADDQ    CX, AX
	VMULPS  (AX), Y6, Y6
	VMULPS  32(AX), Y7, Y7
	VMOVUPS Y6, (BX)
	VMOVUPS Y7, 32(BX)
	ADDQ    CX, BX
	ADDQ    CX, AX
	VMULPS  (AX), Y8, Y8
	VMULPS  32(AX), Y9, Y9
	VMOVUPS Y8, (BX)
	VMOVUPS Y9, 32(BX)
	ADDQ    CX, BX
	ADDQ    CX, AX
	VMULPS  (AX), Y10, Y10
	VMULPS  32(AX), Y11, Y11
	VMOVUPS Y10, (BX)
	VMOVUPS Y11, 32(BX)

next:
	ADDQ $64, R10
	ADDQ $64, R13
	SUBQ $16, R11
	JNZ  colblock
	VZEROUPPER
	RET

// func dotChain(x, y *float32, n, kc int) float32
//
// Σ x[i]·y[i] computed exactly as kern6x16 computes one element of a product
// split into chunks of kc: a sequential FMA chain per chunk, chunks added in
// order.
TEXT ·dotChain(SB), NOSPLIT, $0-36
	MOVQ   x+0(FP), AX
	MOVQ   y+8(FP), BX
	MOVQ   n+16(FP), CX
	MOVQ   kc+24(FP), DX
	VXORPS X0, X0, X0
	TESTQ  CX, CX
	JZ     dcdone

dcchunk:
	MOVQ   DX, SI
	CMPQ   SI, CX
	CMOVQGT CX, SI
	SUBQ   SI, CX
	VXORPS X1, X1, X1

dcloop:
	VMOVSS      (AX), X2
	VFMADD231SS (BX), X2, X1
	ADDQ        $4, AX
	ADDQ        $4, BX
	DECQ        SI
	JNZ         dcloop
	VADDSS      X1, X0, X0
	TESTQ       CX, CX
	JNZ         dcchunk

dcdone:
	VMOVSS X0, ret+32(FP)
	RET
