package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Error bounds, measured with TestExpSweep and kept tight so that a change in
// the algorithm shows: the largest distance in ulps between Exp and the
// correctly rounded e^x, and between the two implementations.
const (
	expMaxULP       = 1
	expImplsMaxULP  = 1
	eps32           = 1.0 / (1 << 23) // float32 machine epsilon
	sentinel        = 12345.678       // written around slices to catch stray writes
	sentinelAfter   = 9               // a whole YMM vector and then some
	nanPayloadQuiet = 0x7fc12345
)

var (
	inf    = float32(math.Inf(1))
	negInf = float32(math.Inf(-1))
	nan32  = float32(math.NaN())
)

// testLengths covers every tail length for several block counts, and a few
// sizes that run the unrolled loops many times.
func testLengths() []int {
	var ns []int
	for n := 0; n <= 67; n++ {
		ns = append(ns, n)
	}
	return append(ns, 1000, 4099)
}

// guarded returns a slice of n elements starting off elements into a buffer
// whose other elements all hold fill, to catch reads (fill poisons the
// result) and writes (checkGuard) outside the slice. off ≥ 1 also makes the
// slice unaligned to 32 bytes when off is odd.
func guarded(n, off int, fill float32) (s, buf []float32) {
	buf = make([]float32, off+n+sentinelAfter)
	for i := range buf {
		buf[i] = fill
	}
	return buf[off : off+n : off+n], buf
}

func checkGuard(t *testing.T, what string, buf []float32, off, n int, fill float32) {
	t.Helper()
	for i, v := range buf {
		if (i < off || i >= off+n) && math.Float32bits(v) != math.Float32bits(fill) {
			t.Fatalf("%s n=%d: wrote outside the slice at buffer index %d (slice at %d): %v", what, n, i, off, v)
		}
	}
}

func randFill(rng *rand.Rand, x []float32, lo, hi float32) {
	for i := range x {
		x[i] = lo + (hi-lo)*rng.Float32()
	}
}

// ulpDiff is the number of float32 values between a and b (0 when equal,
// ±0 equal), for non-NaN a and b.
func ulpDiff(a, b float32) int64 {
	ord := func(f float32) int64 {
		u := math.Float32bits(f)
		if u&(1<<31) != 0 {
			return -int64(u &^ (1 << 31))
		}
		return int64(u)
	}
	d := ord(a) - ord(b)
	if d < 0 {
		d = -d
	}
	return d
}

// expRef is e^x rounded to float32 (float64's exp is accurate to an ulp of
// float64, far below float32's).
func expRef(x float32) float32 { return float32(math.Exp(float64(x))) }

func TestDot(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, n := range testLengths() {
			for off := 1; off <= 2; off++ {
				x, _ := guarded(n, off, nan32)
				y, _ := guarded(n, off+1, nan32)
				randFill(rng, x, -1, 1)
				randFill(rng, y, -1, 1)
				var ref, abs float64
				for i := range x {
					p := float64(x[i]) * float64(y[i])
					ref += p
					abs += math.Abs(p)
				}
				got := Dot(x, y)
				// Recursive summation in float32 errs by at most n·eps·Σ|x·y|
				// whatever the order; the +1 covers the products' rounding.
				if tol := float64(n+1) * eps32 * abs; math.Abs(float64(got)-ref) > tol || got != got {
					t.Fatalf("Dot n=%d off=%d: got %v, want %v ± %g", n, off, got, ref, tol)
				}
			}
		}
	})
}

// DotI8 is exact on integers up to 2^24, so integer-valued x checks the
// sum exactly; fractional x checks the float32 error bound. x sits between
// NaN sentinels and w between large weights, so any element read past the
// slices would show.
func TestDotI8(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, n := range testLengths() {
			for _, integer := range []bool{true, false} {
				x, _ := guarded(n, 1, nan32)
				wbuf := make([]int8, n+24)
				for i := range wbuf {
					wbuf[i] = 127
				}
				w := wbuf[3 : 3+n : 3+n]
				var ref, abs float64
				for i := range x {
					w[i] = int8(rng.IntN(255) - 127)
					if integer {
						x[i] = float32(rng.IntN(17) - 8)
					} else {
						x[i] = float32(rng.Float64()*2 - 1)
					}
					p := float64(x[i]) * float64(w[i])
					ref += p
					abs += math.Abs(p)
				}
				got := float64(DotI8(x, w))
				tol := float64(n+1) * eps32 * abs
				if integer {
					tol = 0
				}
				if math.Abs(got-ref) > tol || got != got {
					t.Fatalf("DotI8 n=%d integer=%v: got %v, want %v ± %g", n, integer, got, ref, tol)
				}
			}
		}
	})
}

// DequantI8 is one rounded product per element, so it must equal the
// float32 product exactly; dst sits between NaN sentinels.
func TestDequantI8(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, n := range testLengths() {
			dst, buf := guarded(n, 1, nan32)
			src := make([]int8, n)
			for i := range src {
				src[i] = int8(rng.IntN(256) - 128)
			}
			s := float32(rng.Float64()*0.1 + 1e-3)
			DequantI8(dst, src, s)
			for i, q := range src {
				if want := float32(q) * s; dst[i] != want {
					t.Fatalf("DequantI8 n=%d: element %d is %v, want %v", n, i, dst[i], want)
				}
			}
			checkGuard(t, "DequantI8", buf, 1, n, nan32)
		}
	})
}

func TestSum(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		for _, n := range testLengths() {
			for off := 1; off <= 2; off++ {
				x, _ := guarded(n, off, nan32)
				randFill(rng, x, -1, 3)
				var ref, abs float64
				for _, v := range x {
					ref += float64(v)
					abs += math.Abs(float64(v))
				}
				got := Sum(x)
				if tol := float64(n) * eps32 * abs; math.Abs(float64(got)-ref) > tol || got != got {
					t.Fatalf("Sum n=%d off=%d: got %v, want %v ± %g", n, off, got, ref, tol)
				}
			}
		}
	})
}

func TestMax(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, n := range testLengths() {
			for off := 1; off <= 2; off++ {
				// +Inf around the slice: NaN would be ignored if read.
				x, _ := guarded(n, off, inf)
				randFill(rng, x, -100, -1)
				want := negInf
				for _, v := range x {
					want = max(want, v)
				}
				if got := Max(x); got != want {
					t.Fatalf("Max n=%d off=%d: got %v, want %v", n, off, got, want)
				}
				if n == 0 {
					continue
				}
				// NaNs anywhere, including where the maximum was, are ignored.
				for i := range x {
					if rng.IntN(3) == 0 || x[i] == want {
						x[i] = nan32
					}
				}
				want = negInf
				all := true
				for _, v := range x {
					if v == v {
						want = max(want, v)
						all = false
					}
				}
				got := Max(x)
				if all {
					if got == got {
						t.Fatalf("Max n=%d of NaNs: got %v, want NaN", n, got)
					}
				} else if got != want {
					t.Fatalf("Max n=%d with NaNs: got %v, want %v", n, got, want)
				}
			}
		}
	})
}

func TestMaxSpecial(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		fill := func(n int, v float32) []float32 {
			x := make([]float32, n)
			for i := range x {
				x[i] = v
			}
			return x
		}
		if got := Max(nil); got != negInf {
			t.Errorf("Max(nil) = %v, want -Inf", got)
		}
		for _, n := range []int{1, 7, 8, 9, 33, 100} {
			if got := Max(fill(n, nan32)); got == got {
				t.Errorf("Max(%d NaNs) = %v, want NaN", n, got)
			}
			if got := Max(fill(n, negInf)); got != negInf {
				t.Errorf("Max(%d × -Inf) = %v, want -Inf", n, got)
			}
			x := fill(n, nan32)
			x[n-1] = negInf
			if got := Max(x); got != negInf {
				t.Errorf("Max(NaNs then -Inf, n=%d) = %v, want -Inf", n, got)
			}
			x = fill(n, negInf)
			x[n/2] = inf
			if got := Max(x); got != inf {
				t.Errorf("Max(… +Inf …, n=%d) = %v, want +Inf", n, got)
			}
			x = fill(n+1, -3)
			x[0] = nan32
			if got := Max(x); got != -3 {
				t.Errorf("Max(NaN, -3, …, n=%d) = %v, want -3", n, got)
			}
		}
	})
}

func TestAxpy(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, n := range testLengths() {
			for off := 1; off <= 2; off++ {
				x, _ := guarded(n, off, nan32)
				y, ybuf := guarded(n, off+1, sentinel)
				randFill(rng, x, -2, 2)
				randFill(rng, y, -2, 2)
				alpha := rng.Float32()*4 - 2
				y0 := append([]float32(nil), y...)
				Axpy(alpha, x, y)
				checkGuard(t, "Axpy", ybuf, off+1, n, sentinel)
				for i := range y {
					ax := float64(alpha) * float64(x[i])
					ref := float64(y0[i]) + ax
					// One rounding of the product (without FMA) and one of the sum.
					tol := eps32 * (math.Abs(ref) + math.Abs(ax))
					if math.Abs(float64(y[i])-ref) > tol || y[i] != y[i] {
						t.Fatalf("Axpy n=%d off=%d i=%d: got %v, want %v ± %g", n, off, i, y[i], ref, tol)
					}
				}
			}
		}
	})
}

func TestScale(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, n := range testLengths() {
			for off := 1; off <= 2; off++ {
				x, buf := guarded(n, off, sentinel)
				randFill(rng, x, -5, 5)
				alpha := rng.Float32()*4 - 2
				x0 := append([]float32(nil), x...)
				Scale(alpha, x)
				checkGuard(t, "Scale", buf, off, n, sentinel)
				for i := range x {
					// A single product rounds the same everywhere.
					if want := alpha * x0[i]; x[i] != want {
						t.Fatalf("Scale n=%d i=%d: got %v, want %v", n, i, x[i], want)
					}
				}
			}
		}
	})
}

// TestExpSweep compares Exp with the correctly rounded e^x at a strided
// sample of every float32 in [-104, 89]: this covers the normal results, the
// subnormal ones (x < -87.3) and the edge of overflow.
func TestExpSweep(t *testing.T) {
	stride := uint32(211) // ≈ 10.6M points
	if testing.Short() {
		stride = 997 // ≈ 2.2M
	}
	var src []float32
	for _, r := range [][2]uint32{
		{math.Float32bits(0), math.Float32bits(89)},
		{math.Float32bits(float32(math.Copysign(0, -1))), math.Float32bits(-104)},
	} {
		for u := r[0]; u <= r[1]; u += stride {
			src = append(src, math.Float32frombits(u))
		}
		src = append(src, math.Float32frombits(r[1]))
	}
	want := make([]float32, len(src))
	for i, x := range src {
		want[i] = expRef(x)
	}
	dst := make([]float32, len(src))
	forEachImpl(t, "vec", func(t *testing.T) {
		Exp(dst, src)
		var worst int64
		var worstX, worstGot float32
		hist := map[int64]int{}
		for i, x := range src {
			d := ulpDiff(dst[i], want[i])
			hist[d]++
			if d > worst {
				worst, worstX, worstGot = d, x, dst[i]
			}
		}
		t.Logf("%d points: max error %d ulp (at x=%v); points by error in ulps: %v", len(src), worst, worstX, hist)
		if worst > expMaxULP {
			t.Errorf("Exp error %d ulp at x=%v (got %v, want %v), bound %d",
				worst, worstX, worstGot, expRef(worstX), expMaxULP)
		}
	})
}

func TestExpSpecial(t *testing.T) {
	maxArg := float32(math.Log(math.MaxFloat32)) // rounds up: e^maxArg overflows
	cases := []struct {
		x, want float32
		exact   bool
	}{
		{negInf, 0, true},
		{inf, inf, true},
		{0, 1, true},
		{float32(math.Copysign(0, -1)), 1, true},
		{-math.MaxFloat32, 0, true},
		{math.MaxFloat32, inf, true},
		{-1e30, 0, true},
		{1e30, inf, true},
		{-104, 0, true},
		{-103.98, 0, true},
		{89, inf, true},
		{maxArg, inf, true},
		{math.Nextafter32(maxArg, 0), expRef(math.Nextafter32(maxArg, 0)), false},
		{88.72, expRef(88.72), false},
		{-88.72, expRef(-88.72), false},
		{-87.33, expRef(-87.33), false}, // smallest normal results
		{-103.9, expRef(-103.9), false},
		{-103.279, math.Float32frombits(1), true}, // smallest subnormal
		{-102.5, expRef(-102.5), false},           // a few subnormal steps
		{1e-8, 1, true},
		{-1e-8, 1, true},
		{1, math.E, true},
		{-1, 1 / math.E, true},
	}
	forEachImpl(t, "vec", func(t *testing.T) {
		src := make([]float32, len(cases))
		for i, c := range cases {
			src[i] = c.x
		}
		// Each value alone (the masked tail) and all together (full vectors).
		all := make([]float32, len(src))
		Exp(all, src)
		for i, c := range cases {
			one := []float32{0}
			Exp(one, src[i:i+1])
			for _, got := range []float32{one[0], all[i]} {
				if c.exact && got != c.want || !c.exact && ulpDiff(got, c.want) > expMaxULP {
					t.Errorf("Exp(%v) = %v (%#x), want %v (%#x)", c.x, got,
						math.Float32bits(got), c.want, math.Float32bits(c.want))
				}
			}
		}
		nans := []float32{nan32, math.Float32frombits(nanPayloadQuiet), math.Float32frombits(0xffc00000),
			math.Float32frombits(0xff812345), math.Float32frombits(0x7f800001), math.Float32frombits(0xffffffff)}
		got := make([]float32, len(nans))
		Exp(got, nans)
		for i, v := range got {
			if v == v {
				t.Errorf("Exp(NaN %#x) = %v, want NaN", math.Float32bits(nans[i]), v)
			}
		}
	})
}

func TestExpLengths(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(11, 12))
		for _, n := range testLengths() {
			for off := 1; off <= 2; off++ {
				src, _ := guarded(n, off, nan32)
				dst, dbuf := guarded(n, off+1, sentinel)
				randFill(rng, src, -90, 90)
				Exp(dst, src)
				checkGuard(t, "Exp", dbuf, off+1, n, sentinel)
				for i, x := range src {
					if d := ulpDiff(dst[i], expRef(x)); d > expMaxULP {
						t.Fatalf("Exp n=%d i=%d: exp(%v) = %v, want %v", n, i, x, dst[i], expRef(x))
					}
				}
				// In place.
				want := append([]float32(nil), dst...)
				Exp(src, src)
				for i := range src {
					if src[i] != want[i] {
						t.Fatalf("Exp in place n=%d i=%d: %v, want %v", n, i, src[i], want[i])
					}
				}
			}
		}
	})
}

func TestExpSubSum(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(13, 14))
		for _, n := range testLengths() {
			for off := 1; off <= 2; off++ {
				src, _ := guarded(n, off, nan32)
				dst, dbuf := guarded(n, off+1, sentinel)
				randFill(rng, src, -30, 5)
				// Some masked-out scores, as in causal attention.
				for i := range src {
					if rng.IntN(5) == 0 {
						src[i] = negInf
					}
				}
				m := Max(src)
				if n == 0 || m == negInf {
					m = 2
				}
				s := ExpSubSum(dst, src, m)
				checkGuard(t, "ExpSubSum", dbuf, off+1, n, sentinel)
				var ref float64
				for i, x := range src {
					// Exp's error, on the float32 difference both paths use.
					want := expRef(x - m)
					if d := ulpDiff(dst[i], want); d > expMaxULP || dst[i] != dst[i] {
						t.Fatalf("ExpSubSum n=%d i=%d: exp(%v−%v) = %v, want %v", n, i, x, m, dst[i], want)
					}
					ref += float64(want)
				}
				// Each term is within an ulp, then n roundings in the sum.
				if tol := float64(n+1) * eps32 * ref; math.Abs(float64(s)-ref) > tol || s != s {
					t.Fatalf("ExpSubSum n=%d sum: got %v, want %v ± %g", n, s, ref, tol)
				}
				// In place.
				want := append([]float32(nil), dst...)
				if s2 := ExpSubSum(src, src, m); s2 != s {
					t.Fatalf("ExpSubSum in place n=%d: sum %v, want %v", n, s2, s)
				}
				for i := range src {
					if src[i] != want[i] {
						t.Fatalf("ExpSubSum in place n=%d i=%d: %v, want %v", n, i, src[i], want[i])
					}
				}
			}
		}
	})
}

func TestExpSubSumSpecial(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		for _, n := range []int{0, 1, 5, 8, 13, 64, 67} {
			src := make([]float32, n)
			dst := make([]float32, n)
			for i := range src {
				src[i] = negInf
				dst[i] = sentinel
			}
			// A fully masked softmax row: zeros, not NaN.
			if s := ExpSubSum(dst, src, negInf); s != 0 {
				t.Errorf("ExpSubSum(all -Inf, m=-Inf) n=%d: sum %v, want 0", n, s)
			}
			for i, v := range dst {
				if v != 0 {
					t.Fatalf("ExpSubSum(all -Inf, m=-Inf) n=%d: dst[%d] = %v, want 0", n, i, v)
				}
			}
			if n == 0 {
				continue
			}
			// The maximum element gives exactly 1.
			src[n/2] = 3.5
			if s := ExpSubSum(dst, src, 3.5); s != 1 || dst[n/2] != 1 {
				t.Errorf("ExpSubSum(one finite) n=%d: sum %v, dst %v, want 1", n, s, dst[n/2])
			}
			// NaN propagates to its element and the sum.
			src[0] = nan32
			if s := ExpSubSum(dst, src, 3.5); s == s || dst[0] == dst[0] {
				t.Errorf("ExpSubSum(NaN) n=%d: sum %v, dst[0] %v, want NaN", n, s, dst[0])
			}
		}
	})
}

func TestLengthMismatchPanics(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		a, b := make([]float32, 9), make([]float32, 8)
		for name, f := range map[string]func(){
			"Dot":        func() { Dot(a, b) },
			"Dot'":       func() { Dot(b, a) },
			"Axpy":       func() { Axpy(1, a, b) },
			"Axpy'":      func() { Axpy(1, b, a) },
			"Exp":        func() { Exp(b, a) },
			"Exp'":       func() { Exp(a, b) },
			"ExpSubSum":  func() { ExpSubSum(b, a, 0) },
			"ExpSubSum'": func() { ExpSubSum(a, b, 0) },
		} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s with lengths 9 and 8 did not panic", name)
					}
				}()
				f()
			}()
		}
	})
}

// TestAddRows checks AddRows against a float64 reference and, bit for bit,
// against the row-by-row float32 sums it promises, at widths around the
// 64-column strips, with rows padded with NaN past the sums' width.
func TestAddRows(t *testing.T) {
	forEachImpl(t, "vec", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(31, 32))
		for _, w := range []int{1, 7, 63, 64, 65, 130, 256, 300} {
			for _, rows := range []int{1, 2, 37} {
				ld := w + 5
				m := randPadded(rng, rows, w, ld)
				s := make([]float32, w)
				randFill(rng, s, -1, 1)
				want := append([]float32(nil), s...)
				for r := range rows {
					for j := range want {
						want[j] += m[r*ld+j]
					}
				}
				ref := make([]float64, w)
				for j := range ref {
					ref[j] = float64(s[j])
					for r := range rows {
						ref[j] += float64(m[r*ld+j])
					}
				}
				AddRows(s, m, rows, ld)
				for j := range s {
					if s[j] != want[j] {
						t.Errorf("w=%d rows=%d: s[%d] = %g, want %g (the rows' float32 sum in order)", w, rows, j, s[j], want[j])
					}
					if math.Abs(float64(s[j])-ref[j]) > 1e-5*float64(rows+1) {
						t.Errorf("w=%d rows=%d: s[%d] = %g, float64 sum %g", w, rows, j, s[j], ref[j])
					}
				}
			}
		}
	})
	defer func() {
		if recover() == nil {
			t.Error("AddRows: no panic on a short m")
		}
	}()
	AddRows(make([]float32, 8), make([]float32, 15), 2, 8)
}
