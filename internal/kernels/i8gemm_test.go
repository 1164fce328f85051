package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// forEachI8Impl runs f on every int8 kernel enabled at the level in force.
func forEachI8Impl(t *testing.T, f func(t *testing.T)) { forEachImpl(t, "i8gemm", f) }

func randI8(rng *rand.Rand, n int) []int8 {
	x := make([]int8, n)
	for i := range x {
		x[i] = int8(rng.IntN(255) - 127)
	}
	return x
}

// TestI8GemmExact checks the int32 product against a plain reference on
// ragged shapes, strided operands and accumulation, on every implementation.
func TestI8GemmExact(t *testing.T) {
	forEachI8Impl(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		shapes := [][3]int{{1, 1, 1}, {4, 16, 4}, {5, 17, 3}, {3, 15, 7}, {9, 33, 5}, {1, 40, 129}, {33, 70, 1000}, {130, 300, 65}, {260, 520, 37}}
		for _, s := range shapes {
			m, n, k := s[0], s[1], s[2]
			lda, ldb, ldc := k+3, k+1, n+5
			a, b := randI8(rng, m*lda), randI8(rng, n*ldb)
			// Extremes: the int16 saturation case of VPMADDUBSW.
			if m > 0 && k > 1 {
				a[0], a[1], b[0], b[1] = -127, -127, -127, -127
			}
			c := make([]int32, m*ldc)
			for i := range c {
				c[i] = int32(rng.IntN(100))
			}
			init := append([]int32(nil), c...)
			want := append([]int32(nil), c...)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					var s int32
					for q := 0; q < k; q++ {
						s += int32(a[i*lda+q]) * int32(b[j*ldb+q])
					}
					want[i*ldc+j] += s
				}
			}
			var pa I8PackedA
			PackI8A(m, k, a, lda, &pa)
			pb := PackI8B(n, k, b, ldb)
			I8GemmI32(&pa, pb, c, ldc, true)
			for i := range c {
				if c[i] != want[i] {
					t.Fatalf("m=%d n=%d k=%d: c[%d] = %d, want %d", m, n, k, i, c[i], want[i])
				}
			}
			got := make([]int32, m*n)
			I8Gemm(m, n, k, a, lda, b, ldb, got, n)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					if got[i*n+j] != want[i*ldc+j]-init[i*ldc+j] {
						t.Fatalf("I8Gemm m=%d n=%d k=%d mismatch at %d,%d", m, n, k, i, j)
					}
				}
			}
		}
	})
}

// TestI8GemmF32 checks the fused dequantization: scales, bias, accumulation.
func TestI8GemmF32(t *testing.T) {
	forEachI8Impl(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, s := range [][3]int{{1, 1, 5}, {2, 16, 9}, {6, 40, 20}, {7, 33, 64}, {131, 270, 130}} {
			m, n, k := s[0], s[1], s[2]
			a, b := randI8(rng, m*k), randI8(rng, n*k)
			var pa I8PackedA
			PackI8A(m, k, a, k, &pa)
			for i := range pa.Scale {
				pa.Scale[i] = rng.Float32() + 0.1
			}
			cs, bias := make([]float32, n), make([]float32, n)
			for j := range cs {
				cs[j], bias[j] = rng.Float32()*0.01, rng.Float32()-0.5
			}
			pb := PackI8B(n, k, b, k)
			for _, add := range []bool{false, true} {
				c := make([]float32, m*n)
				for i := range c {
					c[i] = float32(i % 3)
				}
				I8GemmF32(&pa, pb, cs, bias, c, n, add)
				for i := 0; i < m; i++ {
					for j := 0; j < n; j++ {
						var acc int64
						for q := 0; q < k; q++ {
							acc += int64(a[i*k+q]) * int64(b[j*k+q])
						}
						want := float64(pa.Scale[i])*float64(cs[j])*float64(acc) + float64(bias[j])
						if add {
							want += float64((i*n + j) % 3)
						}
						if d := math.Abs(float64(c[i*n+j]) - want); d > 1e-5*(1+math.Abs(want)) {
							t.Fatalf("m=%d n=%d k=%d add=%v: c[%d,%d] = %v, want %v", m, n, k, add, i, j, c[i*n+j], want)
						}
					}
				}
			}
		}
	})
}

// TestQuantizeI8A checks per-row and static quantization: half a step per
// element, saturation and skipped columns.
func TestQuantizeI8A(t *testing.T) { forEachI8Impl(t, testQuantizeI8A) }

func testQuantizeI8A(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	m, k := 9, 37
	x := make([]float32, m*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	x[3] = 50 // outlier
	skip := make([]bool, k)
	skip[3] = true
	for _, sk := range [][]bool{nil, skip} {
		var pa I8PackedA
		QuantizeI8A(m, k, x, k, 0, sk, &pa)
		b := make([]int8, k)
		for q := range b {
			b[q] = 1
		}
		// Read the quantized values back through the GEMM with unit vectors.
		for q := 0; q < k; q++ {
			e := make([]int8, k)
			e[q] = 1
			c := make([]int32, m)
			I8GemmI32(&pa, PackI8B(1, k, e, k), c, 1, false)
			for i := 0; i < m; i++ {
				v := x[i*k+q]
				s := pa.Scale[i]
				if sk != nil && sk[q] {
					if c[i] != 0 {
						t.Fatalf("skipped column quantized to %d", c[i])
					}
					continue
				}
				if d := math.Abs(float64(v) - float64(c[i])*float64(s)); d > float64(s)/2*(1+1e-6) {
					t.Fatalf("row %d col %d: |x−q·s| = %v > s/2 = %v", i, q, d, s/2)
				}
			}
		}
	}
	var pa I8PackedA
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		if QuantizeI8A(2, 3, []float32{1, 2, 3, 4, bad, 6}, 3, 0, nil, &pa) {
			t.Fatalf("QuantizeI8A reports %v as finite", bad)
		}
		if !QuantizeI8A(2, 3, []float32{1, 2, 3, 4, bad, 6}, 3, 0, []bool{false, true, false}, &pa) {
			t.Fatalf("QuantizeI8A checks the skipped column holding %v", bad)
		}
	}
	for _, pos := range []int{2*9 + 3, 3*9 + 8} { // the assembly part and the tail
		x := make([]float32, 4*9)
		x[pos] = float32(math.NaN())
		if QuantizeI8A(4, 9, x, 9, 0, nil, &pa) {
			t.Fatalf("QuantizeI8A misses a NaN at %d", pos)
		}
		x[pos] = float32(math.Inf(1))
		if QuantizeI8A(4, 9, x, 9, 0, nil, &pa) {
			t.Fatalf("QuantizeI8A misses an Inf at %d", pos)
		}
	}
	QuantizeI8A(1, 3, []float32{1000, -1000, 0.07}, 3, 0.1, nil, &pa)
	c := make([]int32, 3)
	I8GemmI32(&pa, PackI8B(3, 3, []int8{1, 0, 0, 0, 1, 0, 0, 0, 1}, 3), c, 3, false)
	if c[0] != 127 || c[1] != -127 || c[2] != 1 {
		t.Fatalf("static quantization = %v, want [127 -127 1]", c)
	}
}

// TestQuantizeI8AParallel checks that the parallel quantization of a large
// matrix, and that of whole panels with no column tail, equals row-by-row
// quantization.
func TestQuantizeI8AParallel(t *testing.T) {
	for _, s := range [][2]int{{301, 500}, {8, 64}, {12, 40}} {
		t.Run(fmt.Sprintf("M=%d,K=%d", s[0], s[1]), func(t *testing.T) { testQuantizeI8AParallel(t, s[0], s[1]) })
	}
}

func testQuantizeI8AParallel(t *testing.T, m, k int) {
	forEachI8Impl(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 9))
		x := make([]float32, m*k)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		var all, one I8PackedA
		if !QuantizeI8A(m, k, x, k, 0, nil, &all) {
			t.Fatal("finite input reported non-finite")
		}
		e := make([]int8, k)
		for q := range e {
			e[q] = int8(q%5 - 2)
		}
		pb := PackI8B(1, k, e, k)
		got := make([]int32, m)
		I8GemmI32(&all, pb, got, 1, false)
		for i := 0; i < m; i += min(37, m-1) {
			QuantizeI8A(1, k, x[i*k:], k, 0, nil, &one)
			var want [1]int32
			I8GemmI32(&one, pb, want[:], 1, false)
			if got[i] != want[0] || all.Scale[i] != one.Scale[0] {
				t.Fatalf("row %d: %d (scale %v), row alone %d (scale %v)", i, got[i], all.Scale[i], want[0], one.Scale[0])
			}
		}
	})
}

// TestI8GemmExtremes checks every sign combination of ±127 everywhere on
// ragged depths (not multiples of 4 or 64) up to MaxI8K, where the VNNI
// kernel's offset sums Σ (a+128)·b exceed int32 and only the column
// correction brings them back.
func TestI8GemmExtremes(t *testing.T) {
	forEachI8Impl(t, func(t *testing.T) {
		for _, k := range []int{1, 3, 5, 63, 65, 131, 1023, MaxI8K - 1, MaxI8K} {
			if k > 4096 && (testing.Short() || I8Kernel() == I8KernelGeneric) {
				continue
			}
			for _, sa := range []int8{127, -127} {
				for _, sb := range []int8{127, -127} {
					m, n := 5, 17
					a, b := make([]int8, m*k), make([]int8, n*k)
					for i := range a {
						a[i] = sa
					}
					for i := range b {
						b[i] = sb
					}
					// Row 1 and column 2 alternate signs.
					for q := 0; q < k; q += 2 {
						a[k+q], b[2*k+q] = -sa, -sb
					}
					c := make([]int32, m*n)
					I8Gemm(m, n, k, a, k, b, k, c, n)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							var want int64
							for q := 0; q < k; q++ {
								want += int64(a[i*k+q]) * int64(b[j*k+q])
							}
							if int64(c[i*n+j]) != want {
								t.Fatalf("k=%d a=%d b=%d: c[%d,%d] = %d, want %d", k, sa, sb, i, j, c[i*n+j], want)
							}
						}
					}
				}
			}
		}
	})
}

// TestI8LayoutMismatch checks that operands packed for one kernel are
// refused by another.
func TestI8LayoutMismatch(t *testing.T) {
	ls := Implementations("i8gemm")
	if len(ls) < 2 {
		t.Skip("one kernel only")
	}
	layout := func(name string) i8Layout {
		restore, err := Select("i8gemm", name)
		if err != nil {
			t.Fatal(err)
		}
		defer restore()
		return i8CurLayout()
	}
	for _, na := range ls {
		for _, nb := range ls {
			la, lb := layout(na), layout(nb)
			restore, _ := Select("i8gemm", na)
			var pa I8PackedA
			PackI8A(1, 4, []int8{1, 2, 3, 4}, 4, &pa)
			restore()
			restore, _ = Select("i8gemm", nb)
			pb := PackI8B(1, 4, []int8{1, 2, 3, 4}, 4)
			func() {
				defer func() {
					if r := recover(); (r != nil) != (la != lb) {
						t.Errorf("A %s, B %s: panic %v", na, nb, r)
					}
				}()
				c := make([]int32, 1)
				I8GemmI32(&pa, pb, c, 1, false)
				if c[0] != 30 {
					t.Errorf("A %s, B %s: %d, want 30", na, nb, c[0])
				}
			}()
			restore()
		}
	}
}

// TestSetI8Kernel checks the exported kernel switch: every listed kernel
// can be selected, computes the exact product on operands packed after the
// switch, and the restore function puts the previous selection back.
func TestSetI8Kernel(t *testing.T) {
	before := I8Kernel()
	if ks := I8Kernels(); len(ks) == 0 || ks[0] != before {
		t.Fatalf("I8Kernels() = %v, want the default %q first", ks, before)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	m, n, k := 5, 19, 37
	a, b := randI8(rng, m*k), randI8(rng, n*k)
	want := make([]int32, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			for q := 0; q < k; q++ {
				want[i*n+j] += int32(a[i*k+q]) * int32(b[j*k+q])
			}
		}
	}
	for _, name := range I8Kernels() {
		restore, err := SetI8Kernel(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := I8Kernel(); got != name {
			t.Errorf("after SetI8Kernel(%q): I8Kernel() = %q", name, got)
		}
		c := make([]int32, m*n)
		I8Gemm(m, n, k, a, k, b, k, c, n)
		for i := range c {
			if c[i] != want[i] {
				t.Fatalf("%s: c[%d] = %d, want %d", name, i, c[i], want[i])
			}
		}
		restore()
		if got := I8Kernel(); got != before {
			t.Fatalf("restore after %q: I8Kernel() = %q, want %q", name, got, before)
		}
	}
	if _, err := SetI8Kernel("nope"); err == nil {
		t.Error("SetI8Kernel(\"nope\") succeeded")
	}
	if I8Kernel() != before {
		t.Error("a failed SetI8Kernel changed the kernel")
	}
}
