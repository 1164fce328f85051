package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// bf16Ref rounds f to bfloat16 the slow way: of the two bfloat16s around
// f (the truncation and the next one away from zero), take the nearer, the
// one with an even mantissa on a tie; past the largest finite value the
// next one is Inf, at distance 2^128 as if the exponent went on.
func bf16Ref(f float32) uint16 {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		b := math.Float32bits(f)
		if math.IsNaN(float64(f)) {
			return uint16(b>>16) | 0x40
		}
		return uint16(b >> 16)
	}
	val := func(h uint16) float64 { // |value| of a bf16 with the exponent unbounded
		e := int(h>>7) & 0xff
		m := float64(h & 0x7f)
		if e == 0 {
			return math.Ldexp(m, -133)
		}
		return math.Ldexp(128+m, e-134)
	}
	b := math.Float32bits(f)
	t := uint16(b >> 16)
	x := math.Abs(float64(f))
	lo, hi := val(t&0x7fff), val(t&0x7fff+1)
	switch dl, dh := x-lo, hi-x; {
	case dl < dh:
		return t
	case dh < dl:
		return t + 1
	case t&1 == 0:
		return t
	}
	return t + 1
}

// bf16Edges are float32 bit patterns at the edges of the rounding.
var bf16Edges = []uint32{
	0, 0x80000000, // ±0
	0x7f800000, 0xff800000, // ±Inf
	0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fa00000, 0x7fbfffff, 0x7f80ffff, // NaNs, quiet and signalling, payloads high and low
	0x00000001, 0x00007fff, 0x00008000, 0x00008001, 0x00018000, 0x007fffff, 0x807fffff, 0x00800000, // subnormals, ties among them, the largest
	0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001, 0xbf808000, 0xbf818000, // ties to even around 1, and just off them
	0x7f7f7fff, 0x7f7f8000, 0x7f7fffff, 0xff7fffff, 0x7f7effff, 0x7f7f0000, // max finite: below the tie, the tie (to Inf), above
	0x3f800000, 0x40490fdb, 0xc2f6e979, // exact, π, -123.456
}

func TestFloat32ToBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]float32, 0, 1000)
	for _, b := range bf16Edges {
		vals = append(vals, math.Float32frombits(b))
	}
	for range 700 {
		vals = append(vals, math.Float32frombits(rng.Uint32()))
	}
	for _, f := range vals {
		got, want := Float32ToBF16(f), bf16Ref(f)
		if got != want {
			t.Errorf("Float32ToBF16(%#08x) = %#04x, want %#04x", math.Float32bits(f), got, want)
		}
		if math.IsNaN(float64(f)) && got&0x40 == 0 {
			t.Errorf("Float32ToBF16(%#08x) = %#04x, a signalling NaN", math.Float32bits(f), got)
		}
	}
	// Named cases, so that a failure above has a readable twin.
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0x7f7fffff, 0x7f80}, // max finite float32 overflows to Inf
		{0x7f800001, 0x7fc0}, // signalling NaN with a low payload stays NaN, quiet
		{0x00008000, 0x0000}, // subnormal tie to even (down)
		{0x00018000, 0x0002}, // subnormal tie to even (up)
		{0x3f808000, 0x3f80}, // 1 + 2^-8: tie, down to even
		{0x3f818000, 0x3f82}, // tie, up to even
		{0xff800000, 0xff80}, // -Inf
	} {
		if got := Float32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("Float32ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	// The vector routines agree with the scalar ones, at every length
	// around their 16-lane blocks.
	forEachImpl(t, "bf16cvt", func(t *testing.T) {
		for _, n := range []int{0, 1, 15, 16, 17, 33, len(vals)} {
			dst := make([]uint16, n+1)
			dst[n] = 0xbeef
			ToBF16(dst, vals[:n])
			for i, f := range vals[:n] {
				if dst[i] != Float32ToBF16(f) {
					t.Fatalf("n=%d: ToBF16[%d] (%#08x) = %#04x, want %#04x", n, i, math.Float32bits(f), dst[i], Float32ToBF16(f))
				}
			}
			if dst[n] != 0xbeef {
				t.Fatalf("n=%d: ToBF16 wrote past the end", n)
			}
			back := make([]float32, n+1)
			back[n] = 42
			FromBF16(back, dst[:n])
			for i, h := range dst[:n] {
				if math.Float32bits(back[i]) != uint32(h)<<16 {
					t.Fatalf("n=%d: FromBF16[%d] = %#08x, want %#08x", n, i, math.Float32bits(back[i]), uint32(h)<<16)
				}
			}
			if back[n] != 42 {
				t.Fatalf("n=%d: FromBF16 wrote past the end", n)
			}
		}
	})
}

// forEachLevelImpl runs f under every level this CPU runs, each
// implementation of family in turn.
func forEachLevelImpl(t *testing.T, family string, f func(t *testing.T)) {
	for l := LevelGeneric; l <= CPULevel(); l++ {
		t.Run(l.String(), func(t *testing.T) {
			restore := SetLevel(l)
			defer restore()
			forEachImpl(t, family, f)
		})
	}
}

// TestBF16Kernel checks each size of the paired micro-kernel (its portable
// form where it is not enabled) against a float64 reference: depths around
// the unrolled loop, the three epilogues, panels at a stride.
func TestBF16Kernel(t *testing.T) {
	forEachImpl(t, "gemmbf16", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		rw := func() uint32 {
			return pair(Float32ToBF16(rng.Float32()*2-1), Float32ToBF16(rng.Float32()*2-1))
		}
		for _, sz := range [][2]int{{2, 2}, {2, 1}, {1, 2}, {1, 1}} {
			ap, bp := sz[0], sz[1]
			mr, nr := ap*sgemmMR, bp*sgemmNR
			for _, kp := range []int{1, 3, 4, 5, 9, 256} {
				for v, beta := range []float32{0, 1, -0.7, 0, 0.5} {
					var bias []float32 // the last two: the bias variants
					if v >= 3 {
						bias = make([]float32, nr)
						for i := range bias {
							bias[i] = rng.Float32()*2 - 1
						}
					}
					aStride, bStride := kp*sgemmMR+5, kp*sgemmNR+16
					a := make([]uint32, (ap-1)*aStride+kp*sgemmMR)
					b := make([]uint32, (bp-1)*bStride+kp*sgemmNR)
					for i := range a {
						a[i] = rw()
					}
					for i := range b {
						b[i] = rw()
					}
					ldc := nr + 3
					c := make([]float32, (mr-1)*ldc+nr)
					for i := range c {
						c[i] = rng.Float32()*2 - 1
						if beta == 0 {
							c[i] = float32(math.NaN())
						}
					}
					c0 := append([]float32(nil), c...)
					bf16Kernel(ap, bp, kp, a, aStride, b, bStride, c, ldc, 1.3, beta, bias)
					for i := range mr {
						for j := range ldc {
							if i*ldc+j >= len(c) {
								break
							}
							if j >= nr {
								if math.Float32bits(c[i*ldc+j]) != math.Float32bits(c0[i*ldc+j]) {
									t.Fatalf("%dx%d kp=%d: C[%d][%d] outside the tile changed", mr, nr, kp, i, j)
								}
								continue
							}
							var s, sa float64
							for p := range kp {
								aw := a[(i/sgemmMR)*aStride+p*sgemmMR+i%sgemmMR]
								bw := b[(j/sgemmNR)*bStride+p*sgemmNR+j%sgemmNR]
								for _, sh := range []int{0, 16} {
									x := float64(BF16ToFloat32(uint16(aw>>sh))) * float64(BF16ToFloat32(uint16(bw>>sh)))
									s += x
									sa += math.Abs(x)
								}
							}
							if bias != nil {
								s += float64(bias[j])
								sa += math.Abs(float64(bias[j]))
							}
							want := 1.3 * s
							if beta != 0 {
								want += float64(beta) * float64(c0[i*ldc+j])
							}
							tol := 1e-6 * (2*float64(kp) + 4) * (1.3*sa + 1)
							if got := float64(c[i*ldc+j]); math.Abs(got-want) > tol {
								t.Fatalf("%dx%d kp=%d beta=%g bias=%v: C[%d][%d] = %g, want %g", mr, nr, kp, beta, bias != nil, i, j, got, want)
							}
						}
					}
				}
			}
		}
	})
}

// bf16Operand stores op(X) (rows×cols) as a matrix of the given kind with
// row stride ld, and returns it with the bf16-rounded values of op(X) in
// float64 (row-major, dense).
func bf16Operand(rng *rand.Rand, trans, asBF16 bool, rows, cols, pad int) (BF16Mat, []float64) {
	sr, sc := rows, cols // stored shape
	if trans {
		sr, sc = cols, rows
	}
	ld := sc + pad
	f := make([]float32, max(0, (sr-1)*ld+sc))
	for i := range f {
		f[i] = rng.Float32()*2 - 1
	}
	ref := make([]float64, rows*cols)
	for r := range rows {
		for c := range cols {
			i := r*ld + c
			if trans {
				i = c*ld + r
			}
			ref[r*cols+c] = float64(RoundBF16(f[i]))
		}
	}
	if !asBF16 {
		return BF16Mat{F32: f, Ld: ld}, ref
	}
	h := make([]uint16, len(f))
	ToBF16(h, f)
	return BF16Mat{BF16: h, Ld: ld}, ref
}

// checkGemmBF16Run runs gemm on one shape and compares with float64.
func checkGemmBF16Run(t *testing.T, rng *rand.Rand, m, n, k int, transA, transB, aBF, bBF bool, alpha, beta float32, gemm func(transA, transB bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, c []float32, ldc int)) {
	t.Helper()
	a, ra := bf16Operand(rng, transA, aBF, m, k, 3)
	b, rb := bf16Operand(rng, transB, bBF, k, n, 1)
	checkGemmBF16Mats(t, rng, m, n, k, transA, transB, a, ra, b, rb, alpha, beta, gemm)
}

// checkGemmBF16Mats is checkGemmBF16Run on given operands and their
// bf16-rounded values.
func checkGemmBF16Mats(t *testing.T, rng *rand.Rand, m, n, k int, transA, transB bool, a BF16Mat, ra []float64, b BF16Mat, rb []float64, alpha, beta float32, gemm func(transA, transB bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, c []float32, ldc int)) {
	t.Helper()
	aBF, bBF := a.BF16 != nil, b.BF16 != nil
	ldc := n + 2
	c := make([]float32, max(0, (m-1)*ldc+n))
	for i := range c {
		c[i] = rng.Float32()
		if beta == 0 {
			c[i] = float32(math.NaN())
		}
	}
	c0 := append([]float32(nil), c...)
	gemm(transA, transB, m, n, k, alpha, a, b, beta, c, ldc)
	for i := range m {
		for j := range n {
			s, sa := refDot(ra, rb, i, j, n, k)
			want := float64(alpha) * s
			if beta != 0 {
				want += float64(beta) * float64(c0[i*ldc+j])
			}
			tol := 1.2e-7 * float64(k+4) * (math.Abs(float64(alpha))*sa + 1)
			if got := float64(c[i*ldc+j]); !(math.Abs(got-want) <= tol) {
				t.Fatalf("m=%d n=%d k=%d transA=%v transB=%v bf16 A=%v B=%v alpha=%g beta=%g: C[%d][%d] = %g, want %g (tol %g)",
					m, n, k, transA, transB, aBF, bBF, alpha, beta, i, j, got, want, tol)
			}
		}
	}
}

// refDot returns element (i, j) of the float64 product of ra (m×k) and rb
// (k×n), and the sum of its terms' magnitudes (for the tolerance).
func refDot(ra, rb []float64, i, j, n, k int) (s, sa float64) {
	for p := range k {
		x := ra[i*k+p] * rb[p*n+j]
		s += x
		sa += math.Abs(x)
	}
	return s, sa
}

// TestGemmBF16 compares GemmBF16 with a float64 reference on odd shapes,
// every transpose, bf16 and float32 operands, under every level and
// implementation.
func TestGemmBF16(t *testing.T) {
	shapes := [][3]int{{1, 1, 1}, {3, 37, 300}, {7, 5, 3}, {13, 35, 1}, {6, 16, 2}, {12, 32, 9}, {25, 33, 70}, {50, 70, 513}, {1, 40, 21}, {30, 1, 17}}
	if testing.Short() {
		shapes = shapes[:8]
	}
	forEachLevelImpl(t, "gemmbf16", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, s := range shapes {
			for v := range 8 {
				transA, transB, aBF := v&1 != 0, v&2 != 0, v&4 != 0
				bBF := v%3 != 0
				checkGemmBF16Run(t, rng, s[0], s[1], s[2], transA, transB, aBF, bBF, 1.5, []float32{0, 1, -0.5}[v%3], GemmBF16)
			}
		}
	})
}

// TestGemmBF16Paths runs both paths directly, with blocking small enough
// that tiles, kernel calls and chunks of k and n all come in several pieces
// with ragged edges; the paired path uses its portable kernel where the
// assembly is not enabled.
func TestGemmBF16Paths(t *testing.T) {
	blk := bf16Blocking{kp: 3, mc: 12, nt: 64, packMax: 700}
	for _, paired := range []bool{true, false} {
		t.Run(fmt.Sprintf("paired=%v", paired), func(t *testing.T) {
			forEachImpl(t, "gemmbf16", func(t *testing.T) {
				rng := rand.New(rand.NewPCG(7, 8))
				gemm := func(transA, transB bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, c []float32, ldc int) {
					gemmBF16(paired, blk, transA, transB, m, n, k, alpha, a, b, beta, c, ldc)
				}
				for _, s := range [][3]int{{31, 150, 19}, {7, 70, 300}, {13, 200, 8}} {
					for v := range 4 {
						checkGemmBF16Run(t, rng, s[0], s[1], s[2], v&1 != 0, v&2 != 0, v&1 == 0, true, 0.75, []float32{0, 1, 2, -1}[v], gemm)
					}
				}
			})
		})
	}
}

func TestGemmBF16Edges(t *testing.T) {
	// alpha == 0 and k == 0 only scale C; beta == 0 clears NaNs.
	c := []float32{float32(math.NaN()), 2, 3, 4}
	GemmBF16(false, false, 2, 2, 0, 1, BF16Mat{Ld: 1}, BF16Mat{Ld: 2}, 0, c, 2)
	for i, v := range c {
		if v != 0 {
			t.Fatalf("k=0, beta=0: C[%d] = %g", i, v)
		}
	}
	c = []float32{1, 2, 3, 4}
	a := BF16Mat{BF16: []uint16{0x3f80, 0x3f80, 0x3f80, 0x3f80}, Ld: 2}
	GemmBF16(false, false, 2, 2, 2, 0, a, a, 2, c, 2)
	if c[3] != 8 {
		t.Fatalf("alpha=0: C[3] = %g, want 8", c[3])
	}
	for _, f := range []func(){
		func() { GemmBF16(false, false, -1, 1, 1, 1, a, a, 0, c, 2) },
		func() { GemmBF16(false, false, 2, 2, 2, 1, BF16Mat{BF16: a.BF16, Ld: 1}, a, 0, c, 2) },
		func() { GemmBF16(false, false, 3, 2, 2, 1, a, a, 0, c, 2) },
		func() { GemmBF16(false, false, 2, 2, 2, 1, a, a, 0, c[:3], 2) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("bad arguments did not panic")
				}
			}()
			f()
		}()
	}
}

// TestGemmBF16Packing runs both paths on operands whose k pairs the
// packers move as words (bf16 with an even row stride) and on ones they
// must convert or realign first (float32; odd strides; a bf16 matrix
// starting on an odd element), at sizes where the vector packers cover
// full panels and leave ragged tails, with kernel calls in several pieces.
func TestGemmBF16Packing(t *testing.T) {
	shapes := [][3]int{{40, 70, 64}, {19, 33, 50}, {13, 48, 17}}
	blks := []bf16Blocking{bf16DefaultBlocking, {kp: 5, mc: 12, nt: 64, packMax: 900}}
	for _, paired := range []bool{true, false} {
		t.Run(fmt.Sprintf("paired=%v", paired), func(t *testing.T) {
			forEachLevelImpl(t, "bf16cvt", func(t *testing.T) {
				rng := rand.New(rand.NewPCG(9, 10))
				for bi, blk := range blks {
					gemm := func(transA, transB bool, m, n, k int, alpha float32, a, b BF16Mat, beta float32, c []float32, ldc int) {
						gemmBF16(paired, blk, transA, transB, m, n, k, alpha, a, b, beta, c, ldc)
					}
					for _, s := range shapes {
						m, n, k := s[0], s[1], s[2]
						for v := range 16 {
							transA, transB := v&1 != 0, v&2 != 0
							aBF, bBF := v&4 == 0, v&8 == 0
							pad := 2 * (v % 2) // even strides…
							if v%5 == 4 {
								pad++ // …and odd ones
							}
							a, ra := bf16Operand(rng, transA, aBF, m, k, pad)
							b, rb := bf16Operand(rng, transB, bBF, k, n, pad)
							if bi == 0 && v%3 == 0 && aBF {
								// An odd start: no word view of A.
								a.BF16 = append([]uint16{0}, a.BF16...)[1:]
							}
							checkGemmBF16Mats(t, rng, m, n, k, transA, transB, a, ra, b, rb, 1, []float32{0, 1}[v%2], gemm)
						}
					}
				}
			})
		})
	}
}

// TestPairRows checks the pairing of two rows (the vector routines and
// the scalar tail) against Float32ToBF16 and pair on the rounding's edge
// cases, for float32 and bf16 rows, with the panel stride and without.
func TestPairRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const cols = 90
	f := make([]float32, 3*cols)
	for i := range f {
		if i < len(bf16Edges) {
			f[i] = math.Float32frombits(bf16Edges[i])
			f[len(f)-1-i] = math.Float32frombits(bf16Edges[i])
		} else if f[i] == 0 {
			f[i] = math.Float32frombits(rng.Uint32())
		}
	}
	h := make([]uint16, len(f))
	for i, v := range f {
		h[i] = Float32ToBF16(v)
	}
	forEachImpl(t, "bf16cvt", func(t *testing.T) {
		for _, x := range []BF16Mat{{F32: f, Ld: cols}, {BF16: h, Ld: cols}} {
			for _, stride := range []int{16, 40} {
				for _, next := range []bool{true, false} {
					for _, n := range []int{0, 5, 16, 33, 80} {
						dst := make([]uint32, (cols/16+1)*stride)
						for i := range dst {
							dst[i] = 0xdeadbeef
						}
						x.pairRows(dst, stride, 1, next, 7, n)
						for c := range n {
							var hi uint16
							if next {
								hi = Float32ToBF16(f[2*cols+7+c])
							}
							want := pair(Float32ToBF16(f[cols+7+c]), hi)
							if got := dst[(c/16)*stride+c%16]; got != want {
								t.Fatalf("bf16=%v stride=%d next=%v n=%d: word %d = %#08x, want %#08x", x.BF16 != nil, stride, next, n, c, got, want)
							}
						}
						written := 0
						for _, w := range dst {
							if w != 0xdeadbeef {
								written++
							}
						}
						if written != n {
							t.Fatalf("bf16=%v stride=%d n=%d: %d words written", x.BF16 != nil, stride, n, written)
						}
					}
				}
			}
		}
	})
}

// TestPackPairs checks the packers of both operands, plain and
// transposed, float32 (rounded, the edge cases among the values) and bf16,
// against the layout written out element by element: A panels of 6 rows,
// B panels of 16 columns, k pairs as words, zeros past the edges. The
// sizes cover the vector routines' whole runs (48 rows of a transposed A,
// 16 columns, 128-pair segments) and ragged ends of each.
func TestPackPairs(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const size, ld = 260, 263 // stored rows, row stride
	f := make([]float32, size*ld)
	for i := range f {
		if i%97 < len(bf16Edges) {
			f[i] = math.Float32frombits(bf16Edges[i%97])
		} else {
			f[i] = rng.Float32()*2 - 1
		}
	}
	h := make([]uint16, len(f))
	for i, v := range f {
		h[i] = Float32ToBF16(v)
	}
	// op returns word (r, pp) of op(X)[i0+r, p0+2pp…] for a matrix whose
	// op has k along its columns (A) or rows (B, via trans).
	word := func(trans bool, i, p, kk, p0 int) uint32 {
		at := func(i, p int) uint16 {
			if trans {
				return h[p*ld+i]
			}
			return h[i*ld+p]
		}
		var hi uint16
		if p+1 < p0+kk {
			hi = at(i, p+1)
		}
		return pair(at(i, p), hi)
	}
	forEachLevelImpl(t, "bf16cvt", func(t *testing.T) {
		for _, x := range []BF16Mat{{F32: f, Ld: ld}, {BF16: h, Ld: ld}} {
			for _, trans := range []bool{false, true} {
				for _, rows := range []int{1, 6, 16, 47, 48, 53, 101, 144, 203} {
					for _, kk := range []int{1, 2, 7, 13, 15, 64, 257} {
						kp := ceilDiv(kk, 2)
						const i0, p0 = 3, 2
						name := fmt.Sprintf("bf16=%v trans=%v rows=%d kk=%d", x.BF16 != nil, trans, rows, kk)
						// Garbage first: the padding must be written too.
						da := make([]uint32, roundUp(rows, sgemmMR)*kp)
						db := make([]uint32, roundUp(rows, sgemmNR)*kp)
						for _, d := range [][]uint32{da, db} {
							for i := range d {
								d[i] = 0xdeadbeef
							}
						}
						packAPairs(da, x, trans, i0, rows, p0, kk)
						// B's op(B) is k × cols: not transposed, k runs down
						// the stored rows, so trans is inverted against A.
						packBPairs(db, x, !trans, p0, kk, i0, rows)
						for r := range roundUp(rows, sgemmNR) {
							for pp := range kp {
								var want uint32
								if r < rows {
									want = word(trans, i0+r, p0+2*pp, kk, p0)
								}
								if r < roundUp(rows, sgemmMR) {
									if got := da[(r/sgemmMR)*sgemmMR*kp+pp*sgemmMR+r%sgemmMR]; got != want {
										t.Fatalf("%s: A word (%d, %d) = %#08x, want %#08x", name, r, pp, got, want)
									}
								}
								if got := db[(r/sgemmNR)*sgemmNR*kp+pp*sgemmNR+r%sgemmNR]; got != want {
									t.Fatalf("%s: B word (%d, %d) = %#08x, want %#08x", name, pp, r, got, want)
								}
							}
						}
					}
				}
			}
		}
	})
}

// TestGemmBF16Bias checks GemmBF16Bias against a float64 reference on the
// public entry (every level and implementation: the paired path, the
// float32 one, the few-rows one) and on the paired path with blocking that
// cuts k into several chunks and kernel passes and n into ragged tiles,
// where the bias must go in once and only inside C.
func TestGemmBF16Bias(t *testing.T) {
	small := bf16Blocking{kp: 3, mc: 12, nt: 64, packMax: 700}
	run := func(t *testing.T, gemm func(transA, transB bool, m, n, k int, a, b BF16Mat, bias, c []float32, ldc int)) {
		rng := rand.New(rand.NewPCG(13, 14))
		for _, s := range [][3]int{{1, 1, 1}, {3, 37, 300}, {13, 35, 1}, {25, 33, 70}, {31, 150, 19}, {50, 70, 513}, {2, 40, 21}} {
			m, n, k := s[0], s[1], s[2]
			for v := range 8 {
				transA, transB, aBF := v&1 != 0, v&2 != 0, v&4 != 0
				a, ra := bf16Operand(rng, transA, aBF, m, k, 3)
				b, rb := bf16Operand(rng, transB, v%3 != 0, k, n, 1)
				bias := make([]float32, n+1)
				for i := range bias {
					bias[i] = rng.Float32()*2 - 1
				}
				ldc := n + 2
				c := make([]float32, m*ldc)
				for i := range c {
					c[i] = float32(math.NaN()) // not read, and past n not written
				}
				gemm(transA, transB, m, n, k, a, b, bias, c[:(m-1)*ldc+n], ldc)
				for i := range m {
					for j := n; j < ldc; j++ {
						if !math.IsNaN(float64(c[i*ldc+j])) {
							t.Fatalf("m=%d n=%d k=%d: C[%d][%d] past n written", m, n, k, i, j)
						}
					}
				}
				for i := range m {
					for j := range n {
						s, sa := refDot(ra, rb, i, j, n, k)
						ref := s + float64(bias[j])
						tol := 1.2e-7 * float64(k+4) * (sa + 2)
						if got := c[i*ldc+j]; !(math.Abs(float64(got)-ref) <= tol) {
							t.Fatalf("m=%d n=%d k=%d transA=%v transB=%v: C[%d][%d] = %g, want %g",
								m, n, k, transA, transB, i, j, got, ref)
						}
					}
				}
			}
		}
	}
	forEachLevelImpl(t, "gemmbf16", func(t *testing.T) {
		run(t, GemmBF16Bias)
		t.Run("paired", func(t *testing.T) {
			run(t, func(transA, transB bool, m, n, k int, a, b BF16Mat, bias, c []float32, ldc int) {
				gemmBF16Paired(small, transA, transB, m, n, k, 1, a, b, 0, bias[:n], c, ldc)
			})
		})
	})
	defer func() {
		if recover() == nil {
			t.Error("a short bias did not panic")
		}
	}()
	GemmBF16Bias(false, false, 1, 2, 1, BF16Mat{F32: []float32{1}, Ld: 1}, BF16Mat{F32: []float32{1, 2}, Ld: 2}, []float32{1}, make([]float32, 2), 2)
}
