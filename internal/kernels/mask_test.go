package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMaskScale checks every implementation against the definition, bit by
// bit, over lengths and mask offsets on and off the kernel's 16-bit words,
// in place and not, with special values (a dropped NaN or infinity is +0, a
// kept −0 stays −0), and that nothing outside dst is written.
func TestMaskScale(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	const k = float32(1 / 0.9)
	mask := make([]uint64, 40)
	for i := range mask {
		mask[i] = rng.Uint64()
	}
	forEachImpl(t, "mask", func(t *testing.T) {
		for _, n := range []int{0, 1, 15, 16, 17, 31, 64, 65, 200, 1000} {
			for _, lo := range []int{0, 1, 7, 15, 16, 17, 63, 64, 100, 1000} {
				for _, inPlace := range []bool{false, true} {
					src := make([]float32, n)
					for i := range src {
						src[i] = float32(rng.NormFloat64())
						switch i % 37 {
						case 3:
							src[i] = float32(math.NaN())
						case 5:
							src[i] = float32(math.Inf(-1))
						case 7:
							src[i] = float32(math.Copysign(0, -1))
						}
					}
					dst := make([]float32, n+2) // one guard each side
					for i := range dst {
						dst[i] = 7
					}
					out := dst[1 : n+1]
					in := src
					if inPlace {
						copy(out, src)
						in = out
					}
					MaskScale(out, in, mask, lo, k)
					if dst[0] != 7 || dst[n+1] != 7 {
						t.Fatalf("n=%d lo=%d: MaskScale wrote outside dst", n, lo)
					}
					for i := range n {
						want := float32(0)
						if mask[(lo+i)/64]>>((lo+i)%64)&1 == 1 {
							want = src[i] * k
						}
						if got := out[i]; math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
							t.Fatalf("n=%d lo=%d inPlace=%t: dst[%d] = %v, want %v", n, lo, inPlace, i, got, want)
						}
					}
				}
			}
		}
	})
	defer func() {
		if recover() == nil {
			t.Error("a mask too short for its offset was accepted")
		}
	}()
	MaskScale(make([]float32, 10), make([]float32, 10), mask[:1], 60, k)
}

// TestDropoutWords checks every implementation of DropoutWords bit for bit
// against its definition over thresholds from keep-all to drop-all, word
// counts on and off the kernel's loop, and counters near wrapping.
func TestDropoutWords(t *testing.T) {
	forEachImpl(t, "mask", func(t *testing.T) {
		for _, thr := range []uint32{0, 1, 6554, 32768, 65535, 65536} {
			for _, n := range []int{0, 1, 2, 7, 33} {
				for _, ctr := range []uint64{0, 12345, ^uint64(0) - 40} {
					dst := make([]uint64, n+1)
					dst[n] = 42 // guard
					DropoutWords(dst[:n], ctr, thr)
					if dst[n] != 42 {
						t.Fatalf("thr=%d n=%d: wrote past dst", thr, n)
					}
					for e := range 64 * n {
						h := SplitMix64(ctr + uint64(e/64)*16 + uint64(e%64/4))
						want := (h>>(16*(e%4)))&0xffff >= uint64(thr)
						if got := dst[e/64]>>(e%64)&1 == 1; got != want {
							t.Fatalf("thr=%d n=%d ctr=%d: element %d kept=%t, want %t", thr, n, ctr, e, got, want)
						}
					}
				}
			}
		}
	})
}
