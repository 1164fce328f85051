//go:build amd64 && !purego

package kernels

import (
	"math"

	"golang.org/x/sys/cpu"
)

// The int8 micro-kernels are generated with avo; their declarations are in
// i8gemm_amd64_stubs.go and their code in i8gemm_amd64.s. To change them, edit
// _asm/i8gemm/main.go and regenerate both files:
//
//go:generate sh -c "cd _asm && go run ./i8gemm -out ../i8gemm_amd64.s -stubs ../i8gemm_amd64_stubs.go -pkg kernels"

// The int8 implementations of the registry (impl.go), in increasing order
// of preference: the AVX2 sign-trick and W16 kernels and the AVX-512 VNNI
// kernel (see i8gemm.go). I8SignTrick prefers the sign-trick kernel
// whenever it is enabled.
var i8SignTrickAsm, i8W16, i8VNNI bool

// hasAVX512VNNI reports whether the VNNI int8 kernels can run on this CPU.
var hasAVX512VNNI = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW &&
	cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VNNI

func init() {
	Register("i8gemm", I8KernelSignTrick, LevelAVX2, true, &i8SignTrickAsm)
	Register("i8gemm", I8KernelW16, LevelAVX2, true, &i8W16)
	Register("i8gemm", I8KernelVNNI, LevelAVX512, hasAVX512VNNI, &i8VNNI)
}

// The VNNI kernels in use are the ZMM ones: on Zen 4 (512-bit operations
// double-pumped) the YMM ones measured no faster (BenchmarkI8GemmKernelVNNI).

func i8gemmKernelVNNII32(kg int, a, b *int8, corr *int32, c *int32, ldc int, add bool) {
	i8gemmKernelVNNIZI32(kg, a, b, corr, c, ldc, add)
}

func i8gemmKernelVNNIF32(kg int, a, b *int8, corr *int32, c *float32, ldc int, rs, cs, bias *float32, add bool) {
	i8gemmKernelVNNIZF32(kg, a, b, corr, c, ldc, rs, cs, bias, add)
}

// absMaxRow returns max |row[i]|, with the AVX2 routine when an int8
// assembly kernel is enabled.
func absMaxRow(row []float32) float32 {
	if i8SignTrickAsm || i8W16 || i8VNNI {
		return math.Float32frombits(i8AbsMaxBitsAVX2(row))
	}
	return absMax(row)
}

// quantizePanel quantizes the four rows i0…i0+3 (at x, stride ldx) into
// the W16 or VNNI layout with the assembly kernel, 8 (W16) or 16 (VNNI)
// columns at a time, and the last columns in Go.
func quantizePanel(x []float32, ldx, k int, scale float32, dst *I8PackedA, i0 int) (finite bool) {
	var inv [i8MR]float32
	finite = true
	for r := 0; r < i8MR; r++ {
		row := x[r*ldx : r*ldx+k]
		s, ok := rowScale(math.Float32frombits(i8AbsMaxBitsAVX2(row)), scale)
		finite = finite && ok
		dst.Scale[i0+r] = s
		inv[r] = 1 / s
	}
	base := (i0 / i8MR) * dst.kp * i8MR
	var q0 int
	if dst.w16 {
		q0 = k / 8 * 8
		i8QuantW16AVX2(k/8, &x[0], ldx, &inv[0], &dst.data16[base])
	} else {
		q0 = k / 16 * 16
		i8QuantVNNIAVX512(k/16, &x[0], ldx, &inv[0], &dst.data[base])
	}
	var buf [16]int8
	for r := 0; r < i8MR && q0 < k; r++ {
		v := buf[:k-q0]
		quantizeSpan(v, x[r*ldx+q0:r*ldx+k], inv[r], nil)
		dst.putA(i0+r, q0, v)
	}
	return finite
}

// taskAsm computes the tile [i0, i1)×[j0, j1) of C with the assembly kernel
// of the operands' layout, and reports false, doing nothing, when that
// layout's kernel is the portable one.
func (j *i8Job) taskAsm(i0, i1, j0, j1 int) bool {
	w16, vnni := j.a.w16, j.a.layout == i8LayoutVNNI
	if !w16 && !vnni && !i8SignTrickAsm {
		return false
	}
	m, n := j.a.m, j.b.n
	kp := j.a.kp
	var tileI [i8MR * i8NR]int32
	var tileF [i8MR * i8NR]float32
	// kernel runs the micro-kernel for the tile at (ip, jp) into c (int32
	// or float32 as the job says).
	kernelF := func(ip, jp int, c *float32, ldc int, rs *float32, add bool) {
		if vnni {
			a := j.a.data[(ip/i8MR)*kp*i8MR : (ip/i8MR+1)*kp*i8MR]
			b := j.b.data[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
			i8gemmKernelVNNIF32(kp/4, &a[0], &b[0], &j.b.corr[jp], c, ldc, rs, &j.cs[jp], &j.bias[jp], add)
			return
		}
		if w16 {
			a := j.a.data16[(ip/i8MR)*kp*i8MR : (ip/i8MR+1)*kp*i8MR]
			b := j.b.data16[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
			i8gemmKernelW16F32AVX2(kp/2, &a[0], &b[0], c, ldc, rs, &j.cs[jp], &j.bias[jp], add)
			return
		}
		a := j.a.data[(ip/i8MR)*kp*i8MR*2 : (ip/i8MR+1)*kp*i8MR*2]
		b := j.b.data[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
		i8gemmKernel4x16F32AVX2(kp/4, &a[0], &b[0], c, ldc, rs, &j.cs[jp], &j.bias[jp], add)
	}
	// kernelFR runs the W16 kernel of rows < 4 rows (the last, partial
	// row panel: decoding runs one row per call).
	kernelFR := func(rows, ip, jp int, c *float32, ldc int, add bool) {
		a := j.a.data16[(ip/i8MR)*kp*i8MR : (ip/i8MR+1)*kp*i8MR]
		b := j.b.data16[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
		f := [...]func(int, *int16, *int16, *float32, int, *float32, *float32, *float32, bool){
			i8gemmKernelW16F32R1AVX2, i8gemmKernelW16F32R2AVX2, i8gemmKernelW16F32R3AVX2}[rows-1]
		f(kp/2, &a[0], &b[0], c, ldc, &j.a.Scale[ip], &j.cs[jp], &j.bias[jp], add)
	}
	kernelI := func(ip, jp int, c *int32, ldc int, add bool) {
		if vnni {
			a := j.a.data[(ip/i8MR)*kp*i8MR : (ip/i8MR+1)*kp*i8MR]
			b := j.b.data[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
			i8gemmKernelVNNII32(kp/4, &a[0], &b[0], &j.b.corr[jp], c, ldc, add)
			return
		}
		if w16 {
			a := j.a.data16[(ip/i8MR)*kp*i8MR : (ip/i8MR+1)*kp*i8MR]
			b := j.b.data16[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
			i8gemmKernelW16I32AVX2(kp/2, &a[0], &b[0], c, ldc, add)
			return
		}
		a := j.a.data[(ip/i8MR)*kp*i8MR*2 : (ip/i8MR+1)*kp*i8MR*2]
		b := j.b.data[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
		i8gemmKernel4x16I32AVX2(kp/4, &a[0], &b[0], c, ldc, add)
	}
	for jp := j0; jp < j1; jp += i8NR {
		ip := i0
		if vnni && jp+i8NR <= n {
			// Pairs of full row panels: the 8×16 kernel loads B once for
			// both.
			b := j.b.data[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
			for ; ip+2*i8MR <= i1; ip += 2 * i8MR {
				a := j.a.data[(ip/i8MR)*kp*i8MR : (ip/i8MR+2)*kp*i8MR]
				if j.f32 {
					i8gemmKernelVNNIZ8F32(kp/4, &a[0], &b[0], &j.b.corr[jp], &j.cf[ip*j.ldc+jp], j.ldc, &j.a.Scale[ip], &j.cs[jp], &j.bias[jp], j.add)
				} else {
					i8gemmKernelVNNIZ8I32(kp/4, &a[0], &b[0], &j.b.corr[jp], &j.ci[ip*j.ldc+jp], j.ldc, j.add)
				}
			}
		}
		for ; ip < i1; ip += i8MR {
			full := ip+i8MR <= m && jp+i8NR <= n
			if rows := m - ip; j.f32 && w16 && rows < i8MR {
				if jp+i8NR <= n {
					kernelFR(rows, ip, jp, &j.cf[ip*j.ldc+jp], j.ldc, j.add)
					continue
				}
				kernelFR(rows, ip, jp, &tileF[0], i8NR, false)
				for r := 0; r < rows; r++ {
					row := j.cf[(ip+r)*j.ldc+jp : (ip+r)*j.ldc+n]
					for c := range row {
						if j.add {
							row[c] += tileF[r*i8NR+c]
						} else {
							row[c] = tileF[r*i8NR+c]
						}
					}
				}
				continue
			}
			if j.f32 {
				var rs *float32
				var rsPad [i8MR]float32
				if ip+i8MR <= m {
					rs = &j.a.Scale[ip]
				} else {
					copy(rsPad[:], j.a.Scale[ip:m])
					rs = &rsPad[0]
				}
				if full {
					kernelF(ip, jp, &j.cf[ip*j.ldc+jp], j.ldc, rs, j.add)
					continue
				}
				kernelF(ip, jp, &tileF[0], i8NR, rs, false)
				for r := 0; r < min(i8MR, m-ip); r++ {
					row := j.cf[(ip+r)*j.ldc+jp : (ip+r)*j.ldc+min(jp+i8NR, n)]
					for c := range row {
						if j.add {
							row[c] += tileF[r*i8NR+c]
						} else {
							row[c] = tileF[r*i8NR+c]
						}
					}
				}
				continue
			}
			if full {
				kernelI(ip, jp, &j.ci[ip*j.ldc+jp], j.ldc, j.add)
				continue
			}
			kernelI(ip, jp, &tileI[0], i8NR, false)
			j.storeI32(&tileI, ip, jp)
		}
	}
	return true
}
