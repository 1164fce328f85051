package kernels

import (
	"fmt"
	"math"
	"slices"
	"sync/atomic"
)

// Int8 GEMM.
//
// The product is C = A·Bᵀ with A an m×k int8 matrix (activations, one row per
// token) and B an n×k int8 matrix (weights, one row per output channel),
// every value in [−127, 127]. Both operands are packed: k is padded with zeros
// to a multiple of 4 and cut into groups of 4 consecutive values; A into
// micro-panels of 4 rows (32 bytes per group: the 16 values, then their
// absolute values for the sign trick), B into micro-panels of 16 rows (64
// bytes per group). Weights are packed once (PackI8B); activations are
// quantized and packed per call (QuantizeI8A, PackI8A). The micro-kernel
// keeps a 4×16 tile of int32 sums and either stores it or converts it to
// float32 with the row and column scales and the bias (fused
// dequantization). Sums are exact: |Σ| ≤ k·127² < 2^31 for k ≤ MaxI8K.
//
// Calls run in parallel over tiles of C (I8MC rows × up to I8NC columns)
// taken from a shared counter, so faster cores take more tiles.
//
// Two AVX2 micro-kernels exist. The sign-trick kernel works on
// int8 operands: VPSIGNB, VPMADDUBSW, VPMADDWD with ones, VPADDD. On this
// CPU VPSIGNB, VPABSB, VPMADDUBSW and VPMADDWD share two pipes, so it costs
// three of those per 32 multiply-adds and ran ~145 GOP/s on one core (the
// fp32 kernel: ~113 GFLOP/s). The W16 kernel packs both operands
// sign-extended to int16 and does one VPMADDWD per 16 multiply-adds: ~1.5×
// the sign-trick kernel, so it is the default (packed weights then take two
// bytes per value in memory; checkpoints stay int8). Set I8SignTrick to use
// the sign-trick kernel. Both are exact for values in [−127, 127].
//
// On CPUs with AVX-512 F/BW/VL/VNNI the VNNI kernel replaces the W16 kernel
// (unless I8SignTrick is set): VPDPBUSD multiplies unsigned by signed bytes
// and adds four products into each int32 lane, 64 multiply-adds per ZMM
// instruction. A is packed offset by 128 (the byte a + 128, 16 bytes per
// group), B in the int8 layout, and PackI8B stores each column's correction
// 128·Σ_q b[j][q], which the kernel subtracts (exact: see _asm/i8gemm).
// Where two full row panels remain, an 8×16 form takes both, so each load
// of B serves 8 rows and a call carries twice the work for its overhead
// (in interleaved runs of BenchmarkI8GemmF32 it was 3-6% faster per CPU
// second than pairs of 4×16 calls; BenchmarkI8GemmKernelVNNI shows the
// same peak for both, the VPDPBUSD throughput).
const (
	i8MR = 4
	i8NR = 16

	// I8MC and I8NC are the row height and (largest) column width of one
	// parallel task.
	I8MC = 128
	I8NC = 256

	// MaxI8K is the largest depth k whose int32 sums cannot overflow.
	MaxI8K = 1 << 17

	// i8ParWork is the smallest m·n·k worth a second core.
	i8ParWork = 1 << 20
)

func i8RoundUp(x, m int) int { return (x + m - 1) / m * m }

// I8SignTrick selects the sign-trick kernel instead of the W16 kernel on
// AVX2. Operands packed under one setting must be multiplied under the same
// one. Set it before any packing, or not at all.
var I8SignTrick = false

// The int8 kernels by name, as I8Kernels lists them and SetI8Kernel takes
// them.
const (
	I8KernelVNNI      = "vnni"      // AVX-512 VNNI (VPDPBUSD)
	I8KernelW16       = "w16"       // AVX2, operands widened to int16 (VPMADDWD)
	I8KernelSignTrick = "signtrick" // AVX2, VPSIGNB + VPMADDUBSW + VPMADDWD
	I8KernelGeneric   = "generic"   // portable Go (purego builds, non-amd64)
)

// I8Kernel returns the name of the int8 kernel the current settings select
// for operands packed from now on.
func I8Kernel() string { return i8LayoutKernel(i8CurLayout()) }

func i8LayoutKernel(l i8Layout) string {
	switch {
	case l == i8LayoutVNNI:
		return I8KernelVNNI
	case l == i8LayoutW16:
		return I8KernelW16
	case i8SignTrickAsm:
		return I8KernelSignTrick
	}
	return I8KernelGeneric
}

// I8Kernels lists the int8 kernels this CPU and build can run at the kernel
// level in force (see CurrentLevel), the default first and the portable
// one last.
func I8Kernels() []string {
	impls := Implementations("i8gemm") // generic, then in registration order
	ks := make([]string, 0, len(impls))
	for _, k := range []string{I8KernelVNNI, I8KernelW16, I8KernelSignTrick} {
		if slices.Contains(impls, k) {
			ks = append(ks, k)
		}
	}
	return append(ks, I8KernelGeneric)
}

// SetI8Kernel selects the int8 kernel by name (one of I8Kernels) and returns
// a function that restores the previous selection. It is meant for tests
// and benchmarks that compare kernels: it is not safe for concurrent use
// with anything packing or multiplying int8 operands, and operands packed
// under one kernel must be packed again after a switch (multiplying them
// under another panics), so call it before packing.
func SetI8Kernel(name string) (restore func(), err error) {
	if !slices.Contains(I8Kernels(), name) {
		return nil, fmt.Errorf("kernels: int8 kernel %q not available here (have %v)", name, I8Kernels())
	}
	sel, err := Select("i8gemm", name)
	if err != nil {
		return nil, err
	}
	st := I8SignTrick
	I8SignTrick = false
	return func() { I8SignTrick = st; sel() }, nil
}

// i8Layout names the packed layout (and kernel) of an operand.
type i8Layout uint8

const (
	i8LayoutI8   i8Layout = iota // int8 with absolute values: sign trick, generic
	i8LayoutW16                  // int16
	i8LayoutVNNI                 // A offset by 128, B int8 plus column corrections
)

// i8CurLayout returns the layout the current settings select.
func i8CurLayout() i8Layout {
	switch {
	case I8SignTrick && i8SignTrickAsm, !i8W16 && !i8VNNI:
		return i8LayoutI8
	case i8VNNI:
		return i8LayoutVNNI
	}
	return i8LayoutW16
}

// I8PackedB is an n×k int8 matrix packed as the B operand of the int8 GEMM.
// It is immutable once packed and safe for concurrent use.
type I8PackedB struct {
	n, k, kp int
	layout   i8Layout
	w16      bool
	data     []int8  // ceil(n/16) micro-panels of kp·16 bytes (int8 and VNNI layouts)
	data16   []int16 // ceil(n/16) micro-panels of kp·16 values (W16 layout)
	corr     []int32 // VNNI layout: 128·Σ_q b[j][q], padded to a multiple of 16
}

// Dims returns n and k.
func (p *I8PackedB) Dims() (n, k int) { return p.n, p.k }

// Bytes returns the size of the packed data in bytes.
func (p *I8PackedB) Bytes() int { return len(p.data) + 2*len(p.data16) + 4*len(p.corr) }

// PackI8B packs the n×k matrix b (row j at b[j·ldb:]) for I8GemmF32 and
// I8GemmI32. It panics on inconsistent arguments.
func PackI8B(n, k int, b []int8, ldb int) *I8PackedB {
	if n < 0 || k < 0 || k > MaxI8K || (n > 0 && (ldb < k || len(b) < (n-1)*ldb+k)) {
		panic("kernels: PackI8B: bad dimensions")
	}
	kp := i8RoundUp(k, 4)
	p := &I8PackedB{n: n, k: k, kp: kp, layout: i8CurLayout()}
	p.w16 = p.layout == i8LayoutW16
	if p.w16 {
		p.data16 = make([]int16, i8RoundUp(n, i8NR)*kp)
		for j := 0; j < n; j++ {
			panel := p.data16[(j/i8NR)*kp*i8NR+(j%i8NR)*2:]
			for q, v := range b[j*ldb : j*ldb+k] {
				panel[(q/2)*32+q%2] = int16(v)
			}
		}
		return p
	}
	p.data = make([]int8, i8RoundUp(n, i8NR)*kp)
	for j := 0; j < n; j++ {
		panel := p.data[(j/i8NR)*kp*i8NR:]
		jj := j % i8NR
		row := b[j*ldb : j*ldb+k]
		for q, v := range row {
			panel[(q/4)*64+jj*4+q%4] = v
		}
	}
	if p.layout == i8LayoutVNNI {
		p.corr = make([]int32, i8RoundUp(n, i8NR))
		for j := 0; j < n; j++ {
			var s int32
			for _, v := range b[j*ldb : j*ldb+k] {
				s += int32(v)
			}
			p.corr[j] = 128 * s
		}
	}
	return p
}

// I8PackedA is an m×k int8 matrix packed as the A operand of the int8 GEMM,
// with one float32 scale per row (used by I8GemmF32). Its buffers are reused
// by later packings, so one I8PackedA serves a stream of calls.
type I8PackedA struct {
	m, k, kp int
	layout   i8Layout
	w16      bool
	data     []int8  // int8 layout: values and absolute values; VNNI: a + 128
	data16   []int16 // W16 layout
	// Scale holds the m row scales (dequantization factors).
	Scale []float32
}

// Dims returns m and k.
func (p *I8PackedA) Dims() (m, k int) { return p.m, p.k }

// reset sizes p for an m×k matrix and clears the padding.
func (p *I8PackedA) reset(m, k int) {
	if m < 0 || k < 0 || k > MaxI8K {
		panic("kernels: I8PackedA: bad dimensions")
	}
	p.m, p.k, p.kp, p.layout = m, k, i8RoundUp(k, 4), i8CurLayout()
	p.w16 = p.layout == i8LayoutW16
	if cap(p.Scale) < i8RoundUp(m, i8MR) {
		p.Scale = make([]float32, i8RoundUp(m, i8MR))
	}
	p.Scale = p.Scale[:m]
	if p.w16 {
		p.data16 = i8ResetPanels(p.data16, m, k, p.kp, 1)
		return
	}
	w := 1
	if p.layout == i8LayoutI8 {
		w = 2 // the values, then their absolute values
	}
	p.data = i8ResetPanels(p.data, m, k, p.kp, w)
}

// i8ResetPanels returns buf sized for the 4-row micro-panels of an m×k A
// operand, kp·4·w elements each (w = 2 where the layout also packs the
// absolute values), with the padding cleared: the rows from m on and, when
// kp ≠ k, the last four columns of every panel, which every layout stores as
// the panel's last 16·w elements (the packing then writes those below k).
func i8ResetPanels[E int8 | int16](buf []E, m, k, kp, w int) []E {
	ps := kp * i8MR * w
	size := i8CeilDiv(m, i8MR) * ps
	if cap(buf) < size {
		buf = make([]E, size)
	}
	buf = buf[:size]
	full := (m / i8MR) * ps
	clear(buf[full:])
	if kp != k {
		for end := ps; end <= full; end += ps {
			clear(buf[end-16*w : end])
		}
	}
	return buf
}

// putA stores v as the columns q0, q0+1, … of row i of p, in p's layout. q0
// is a multiple of 4.
func (p *I8PackedA) putA(i, q0 int, v []int8) {
	switch p.layout {
	case i8LayoutW16: // pairs, 8 values per pair of columns
		panel := p.data16[(i/i8MR)*p.kp*i8MR+(i%i8MR)*2+q0*4:]
		q := 0
		for ; q+4 <= len(v); q += 4 {
			d, s := panel[q*4:q*4+10:q*4+10], v[q:q+4:q+4]
			d[0], d[1], d[8], d[9] = int16(s[0]), int16(s[1]), int16(s[2]), int16(s[3])
		}
		for ; q < len(v); q++ {
			panel[(q/2)*8+q%2] = int16(v[q])
		}
	case i8LayoutVNNI: // groups of 4, 16 bytes per group
		panel := p.data[(i/i8MR)*p.kp*i8MR+(i%i8MR)*4+q0*4:]
		for q, x := range v {
			panel[(q/4)*16+q%4] = x ^ -128 // the byte x + 128
		}
	default: // groups of 4, 32 bytes per group: values, then absolute values
		panel := p.data[(i/i8MR)*p.kp*i8MR*2+(i%i8MR)*4+q0*8:]
		for q, x := range v {
			o := (q/4)*32 + q%4
			panel[o], panel[o+16] = x, absI8(x)
		}
	}
}

// PackI8A packs the m×k int8 matrix a (row i at a[i·lda:]) into dst. The
// row scales are set to 1.
func PackI8A(m, k int, a []int8, lda int, dst *I8PackedA) {
	if m > 0 && (lda < k || len(a) < (m-1)*lda+k) {
		panic("kernels: PackI8A: bad dimensions")
	}
	dst.reset(m, k)
	for i := 0; i < m; i++ {
		dst.Scale[i] = 1
		dst.putA(i, 0, a[i*lda:i*lda+k])
	}
}

// QuantizeI8A quantizes the m×k float32 matrix x (row i at x[i·ldx:]) into
// dst, symmetric int8: q = round(x/s) clamped to [−127, 127] (ties to even),
// so |x − q·s| ≤ s/2 for |x| ≤ 127·s. With scale > 0 every row uses s =
// scale (static per-tensor quantization) and values beyond 127·s saturate;
// with scale == 0 each row uses s = max|x_row|/127 (dynamic per-token; 1 for
// an all-zero row). Columns with skip[q] set (skip may be nil) are quantized
// as zero and left out of the row maxima: they are the outlier columns of
// LLM.int8(). dst.Scale receives the row scales. The
// result reports whether every value outside the skipped columns was finite.
func QuantizeI8A(m, k int, x []float32, ldx int, scale float32, skip []bool, dst *I8PackedA) (finite bool) {
	if m > 0 && (ldx < k || len(x) < (m-1)*ldx+k) || (skip != nil && len(skip) < k) || !(scale >= 0) {
		panic("kernels: QuantizeI8A: bad arguments")
	}
	dst.reset(m, k)
	q := quantizeJobs.Get()
	q.m, q.k, q.x, q.ldx, q.scale, q.skip, q.dst = m, k, x, ldx, scale, skip, dst
	q.bad.Store(false)
	panels := i8CeilDiv(m, i8MR)
	workers := Threads()
	if m*k < 1<<17 {
		workers = 1
	}
	// Items of 4 panels (16 rows): a few microseconds each.
	For(workers, i8CeilDiv(panels, 4), q)
	finite = !q.bad.Load()
	q.x, q.skip, q.dst = nil, nil, nil
	quantizeJobs.Put(q)
	return finite
}

var quantizeJobs FreeList[quantizeJob]

// quantizeJob is one QuantizeI8A call, split into items of four row panels.
type quantizeJob struct {
	m, k  int
	x     []float32
	ldx   int
	scale float32
	skip  []bool
	dst   *I8PackedA
	bad   atomic.Bool
}

// Item quantizes panels 4i…4i+3.
func (q *quantizeJob) Item(_, it int) {
	m, k, x, ldx, dst := q.m, q.k, q.x, q.ldx, q.dst
	for p := 4 * it; p < min(4*it+4, i8CeilDiv(m, i8MR)); p++ {
		i0 := p * i8MR
		if q.skip == nil && i0+i8MR <= m && (dst.w16 && k >= 8 || dst.layout == i8LayoutVNNI && k >= 16) {
			if !quantizePanel(x[i0*ldx:], ldx, k, q.scale, dst, i0) {
				q.bad.Store(true)
			}
			continue
		}
		for i := i0; i < min(i0+i8MR, m); i++ {
			if !quantizeRow(x[i*ldx:i*ldx+k], q.scale, q.skip, dst, i) {
				q.bad.Store(true)
			}
		}
	}
}

// rowScale returns the scale of a row with the given max |x| (or the static
// scale) and whether the row is finite.
func rowScale(mx, scale float32) (s float32, finite bool) {
	finite = mx <= math.MaxFloat32 // false for +Inf and NaN
	s = scale
	if s == 0 {
		s = mx / 127
		if !(s > 0) || math.IsInf(float64(s), 0) {
			s = 1
			if math.IsInf(float64(mx), 0) {
				s = math.MaxFloat32 / 127
			}
		}
	}
	return s, finite
}

// quantizeRow quantizes row i into dst and reports whether its (non-skipped)
// values are finite.
func quantizeRow(row []float32, scale float32, skip []bool, dst *I8PackedA, i int) (finite bool) {
	var mx float32
	if skip == nil {
		mx = absMaxRow(row)
	} else {
		for q, v := range row {
			if !skip[q] {
				mx = max(mx, abs32(v))
			}
		}
	}
	s, finite := rowScale(mx, scale)
	dst.Scale[i] = s
	inv := 1 / s
	var buf [256]int8
	for q0 := 0; q0 < len(row); q0 += len(buf) {
		v := buf[:min(len(buf), len(row)-q0)]
		var sk []bool
		if skip != nil {
			sk = skip[q0:]
		}
		quantizeSpan(v, row[q0:], inv, sk)
		dst.putA(i, q0, v)
	}
	return finite
}

// quantizeSpan sets dst[q] = quantize1(x[q], inv), or 0 where skip[q] is set
// (skip may be nil).
func quantizeSpan(dst []int8, x []float32, inv float32, skip []bool) {
	x = x[:len(dst)]
	if skip == nil {
		q := 0
		for ; q+4 <= len(x); q += 4 { // unrolled: ~1.4× faster
			d, v := dst[q:q+4:q+4], x[q:q+4:q+4]
			d[0], d[1], d[2], d[3] = quantize1(v[0], inv), quantize1(v[1], inv), quantize1(v[2], inv), quantize1(v[3], inv)
		}
		for ; q < len(x); q++ {
			dst[q] = quantize1(x[q], inv)
		}
		return
	}
	skip = skip[:len(dst)]
	for q, v := range x {
		var qv int8
		if !skip[q] {
			qv = quantize1(v, inv)
		}
		dst[q] = qv
	}
}

// quantize1 returns round(v·inv) clamped to [−127, 127], ties to even, NaN
// to 0, without branches (the signs of activations are unpredictable): adding
// and subtracting 1.5·2^23 rounds a float32 of magnitude below 2^22 to an
// integer in the current rounding mode, round-to-nearest-even.
func quantize1(v, inv float32) int8 {
	const magic = 12582912 // 1.5·2^23
	f := v * inv
	f = max(min(f, 127), -127)
	f = (f + magic) - magic
	return int8(int32(f))
}

// absI8 returns |v| for v in [−127, 127].
func absI8(v int8) int8 {
	if v < 0 {
		return -v
	}
	return v
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

func absMax(x []float32) float32 {
	var m0, m1, m2, m3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		m0 = max(m0, abs32(x[i]))
		m1 = max(m1, abs32(x[i+1]))
		m2 = max(m2, abs32(x[i+2]))
		m3 = max(m3, abs32(x[i+3]))
	}
	for ; i < len(x); i++ {
		m0 = max(m0, abs32(x[i]))
	}
	return max(m0, m1, m2, m3)
}

// i8Job is one product: the operands and the tiling of its parallel loop.
type i8Job struct {
	a        *I8PackedA
	b        *I8PackedB
	cs, bias []float32 // padded to a multiple of 16
	cf       []float32
	ci       []int32
	ldc      int
	add, f32 bool
	mc, nc   int
	tm, tn   int
}

// I8GemmF32 computes c[i·ldc+j] = a.Scale[i]·colScale[j]·Σ_q A[i][q]·B[j][q] +
// bias[j] for i < m, j < n (m from a, n and k from b), adding to c when add
// is set. bias may be nil. It panics on inconsistent arguments.
func I8GemmF32(a *I8PackedA, b *I8PackedB, colScale, bias []float32, c []float32, ldc int, add bool) {
	m, n := a.m, b.n
	if a.k != b.k || len(colScale) < n || (bias != nil && len(bias) < n) || len(a.Scale) < m ||
		(m > 0 && n > 0 && (ldc < n || len(c) < (m-1)*ldc+n)) {
		panic("kernels: I8GemmF32: bad arguments")
	}
	if m == 0 || n == 0 {
		return
	}
	np := i8RoundUp(n, i8NR)
	cs := colScale[:n]
	if np != n {
		cs = append(make([]float32, 0, np), colScale[:n]...)
		cs = cs[:np]
	}
	bs := bias
	if bias == nil {
		bs = make([]float32, np)
	} else if np != n {
		bs = append(make([]float32, 0, np), bias[:n]...)
		bs = bs[:np]
	}
	if a.k == 0 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				if add {
					row[j] += bs[j]
				} else {
					row[j] = bs[j]
				}
			}
		}
		return
	}
	j := &i8Job{a: a, b: b, cs: cs, bias: bs, cf: c, ldc: ldc, add: add, f32: true}
	j.run()
}

// I8GemmI32 computes c[i·ldc+j] (+)= Σ_q A[i][q]·B[j][q] exactly in int32.
func I8GemmI32(a *I8PackedA, b *I8PackedB, c []int32, ldc int, add bool) {
	m, n := a.m, b.n
	if a.k != b.k || (m > 0 && n > 0 && (ldc < n || len(c) < (m-1)*ldc+n)) {
		panic("kernels: I8GemmI32: bad arguments")
	}
	if m == 0 || n == 0 {
		return
	}
	if a.k == 0 {
		if !add {
			for i := 0; i < m; i++ {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		return
	}
	j := &i8Job{a: a, b: b, ci: c, ldc: ldc, add: add}
	j.run()
}

// I8Gemm computes the int32 product c = a·bᵀ of the m×k matrix a and the n×k
// matrix b (packing both; use PackI8B and I8GemmI32 to pack b once).
func I8Gemm(m, n, k int, a []int8, lda int, b []int8, ldb int, c []int32, ldc int) {
	var pa I8PackedA
	PackI8A(m, k, a, lda, &pa)
	I8GemmI32(&pa, PackI8B(n, k, b, ldb), c, ldc, false)
}

func (j *i8Job) run() {
	if j.a.layout != j.b.layout || j.a.layout != i8CurLayout() {
		panic("kernels: int8 operands packed for another kernel (I8SignTrick or the CPU features changed)")
	}
	m, n, k := j.a.m, j.b.n, j.a.k
	workers := Threads()
	if m*n*k < i8ParWork {
		workers = 1
	}
	j.mc, j.nc = I8MC, I8NC
	// Enough tasks to balance the cores: a worker that starts late (a
	// goroutine's wake-up) or runs slower must cost at most a small task.
	// With 4 tasks per worker, 256×1024×1024 ran at 1.57× one core's speed
	// on two; with 32 at 1.72×, which the large shapes reach too. Narrow the
	// columns first, which keeps each task's rows (its A panel) whole.
	for workers > 1 && i8CeilDiv(m, j.mc)*i8CeilDiv(n, j.nc) < 32*workers && j.nc > 2*i8NR {
		j.nc /= 2
	}
	for workers > 1 && i8CeilDiv(m, j.mc)*i8CeilDiv(n, j.nc) < 32*workers && j.mc > 4*i8MR {
		j.mc /= 2
	}
	j.tm, j.tn = i8CeilDiv(m, j.mc), i8CeilDiv(n, j.nc)
	For(workers, j.tm*j.tn, j)
}

func i8CeilDiv(a, b int) int { return (a + b - 1) / b }

// Item computes tile t, an item of the job's parallel loop.
func (j *i8Job) Item(_, t int) { j.task(t) }

// task computes tile t of C. Tiles go in column-major order: the cores
// work on the row blocks of one column block at the same time, so each
// reads that block of B (I8NC·k bytes) into its L2 once and keeps it for
// its next tiles, while A, the smaller operand, is read again per tile. In
// row-major order both cores read all of B once per row block, and at
// 1024×1024×4096 B (4 MB) does not stay in the cache beside C's 16 MB of
// writes. Per CPU second on the shared 2-core machine (BenchmarkI8GemmF32,
// vnni, a binary per order, interleaved runs, medians), column-major ran
// 1024×1024×4096 at 346 GOP/s against 302 (4 runs) and 256×1024×1024 at
// 335 against 290 (5 runs).
func (j *i8Job) task(t int) {
	m, n := j.a.m, j.b.n
	i0 := (t % j.tm) * j.mc
	j0 := (t / j.tm) * j.nc
	i1, j1 := min(i0+j.mc, m), min(j0+j.nc, n)
	if j.taskAsm(i0, i1, j0, j1) {
		return
	}
	kp := j.a.kp
	var tileI [i8MR * i8NR]int32
	for jp := j0; jp < j1; jp += i8NR {
		for ip := i0; ip < i1; ip += i8MR {
			a := j.a.data[(ip/i8MR)*kp*i8MR*2 : (ip/i8MR+1)*kp*i8MR*2]
			b := j.b.data[(jp/i8NR)*kp*i8NR : (jp/i8NR+1)*kp*i8NR]
			i8gemmKernelGeneric(kp/4, a, b, &tileI)
			j.storeGeneric(&tileI, ip, jp)
		}
	}
}

func (j *i8Job) storeI32(tile *[i8MR * i8NR]int32, ip, jp int) {
	m, n := j.a.m, j.b.n
	for r := 0; r < min(i8MR, m-ip); r++ {
		row := j.ci[(ip+r)*j.ldc+jp : (ip+r)*j.ldc+min(jp+i8NR, n)]
		for c := range row {
			if j.add {
				row[c] += tile[r*i8NR+c]
			} else {
				row[c] = tile[r*i8NR+c]
			}
		}
	}
}

// storeGeneric writes an int32 tile, dequantized when the job outputs
// float32, exactly as the assembly epilogue does (one fused multiply-add).
func (j *i8Job) storeGeneric(tile *[i8MR * i8NR]int32, ip, jp int) {
	if !j.f32 {
		j.storeI32(tile, ip, jp)
		return
	}
	m, n := j.a.m, j.b.n
	for r := 0; r < min(i8MR, m-ip); r++ {
		rs := j.a.Scale[ip+r]
		row := j.cf[(ip+r)*j.ldc+jp : (ip+r)*j.ldc+min(jp+i8NR, n)]
		for c := range row {
			sc := rs * j.cs[jp+c]
			b := j.bias[jp+c]
			if j.add {
				b += row[c]
			}
			row[c] = float32(math.FMA(float64(float32(tile[r*i8NR+c])), float64(sc), float64(b)))
		}
	}
}
