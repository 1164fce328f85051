package attention

import (
	"fmt"
	"testing"

	"github.com/galleon-ml/galleon/internal/cputime"
)

// Benchmarks of the issue: B=1, H=4, D=64, causal. FLOPs count the causal
// half, as the PyTorch anchor does: 4·B·H·T²·D/2 for the forward pass (two
// products) and 3.5 times that for forward plus backward (seven products).

const benchB, benchH, benchD = 1, 4, 64

func fwdFLOPs(t, d int) float64 {
	return 2 * 2 * benchB * benchH * float64(t) * float64(t) * float64(d) / 2
}

func benchInputs(t, d int) inputs {
	return tcase{B: benchB, H: benchH, KVH: benchH, Tq: t, Tk: t, D: d}.inputs(1)
}

type fwdFunc func(q, k, v Tensor, opts Options) (Tensor, []float32, error)
type bwdFunc func(q, k, v, o Tensor, lse []float32, dO Tensor, opts Options) (Tensor, Tensor, Tensor, error)

func benchAttention(b *testing.B, fwd fwdFunc, bwd bwdFunc, t, d int, backward bool, opts Options) {
	in := benchInputs(t, d)
	opts.Causal = true
	step := func() {
		o, lse, err := fwd(in.q, in.k, in.v, opts)
		if err != nil {
			b.Fatal(err)
		}
		if backward {
			if _, _, _, err := bwd(in.q, in.k, in.v, o, lse, in.dO, opts); err != nil {
				b.Fatal(err)
			}
		}
	}
	step() // fill the scratch pools: B/op then shows the steady state
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cputime.Process()
	for i := 0; i < b.N; i++ {
		step()
	}
	cpu := cputime.Process() - cpu0
	flops := fwdFLOPs(t, d)
	if backward {
		flops *= 3.5
	}
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/op")
	b.ReportMetric(cpu.Seconds()*1e3/float64(b.N), "cpu-ms/op")
}

func BenchmarkFlash(b *testing.B) {
	for _, pass := range []string{"fwd", "fwdbwd"} {
		for _, t := range []int{1024, 4096, 16384} {
			b.Run(fmt.Sprintf("%s/T=%d", pass, t), func(b *testing.B) {
				benchAttention(b, Forward, Backward, t, benchD, pass == "fwdbwd", Options{})
			})
		}
	}
}

func BenchmarkNaive(b *testing.B) {
	for _, pass := range []string{"fwd", "fwdbwd"} {
		for _, t := range []int{1024, 4096} {
			b.Run(fmt.Sprintf("%s/T=%d", pass, t), func(b *testing.B) {
				benchAttention(b, NaiveForward, NaiveBackward, t, benchD, pass == "fwdbwd", Options{})
			})
		}
	}
}

// BenchmarkTileSweep times the forward pass and forward+backward at T=4096
// (B=1, H=4, causal) for a grid of tile sizes and head widths; it chose
// DefaultBlockQ and DefaultBlockK. Compare cpu-ms/op, which the other load
// of a shared machine disturbs least.
func BenchmarkTileSweep(b *testing.B) {
	for _, d := range []int{64, 128} {
		for _, pass := range []string{"fwd", "fwdbwd"} {
			for _, bq := range []int{48, 64, 96, 128, 192} {
				for _, bk := range []int{32, 64, 128, 256} {
					b.Run(fmt.Sprintf("D=%d/%s/bq=%d/bk=%d", d, pass, bq, bk), func(b *testing.B) {
						benchAttention(b, Forward, Backward, 4096, d, pass == "fwdbwd", Options{BlockQ: bq, BlockK: bk})
					})
				}
			}
		}
	}
}

// BenchmarkDecode times one new token (B=1, H=4, D=64) against a KV cache
// holding L positions; the cache is read once, so GB/s is the figure of merit.
func BenchmarkDecode(b *testing.B) {
	for _, l := range []int{1024, 4096, 16384} {
		b.Run(fmt.Sprintf("L=%d", l), func(b *testing.B) {
			c := tcase{B: benchB, H: benchH, KVH: benchH, Tq: 1, Tk: l, D: benchD}
			in := c.inputs(1)
			o := NewTensor(benchB, benchH, 1, benchD)
			opts := Options{Causal: true}
			if err := DecodeInto(o, in.q, in.k, in.v, l, opts); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := DecodeInto(o, in.q, in.k, in.v, l, opts); err != nil {
					b.Fatal(err)
				}
			}
			bytes := float64(2 * benchB * benchH * l * benchD * 4)
			b.ReportMetric(bytes*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// presetShapes are the attention shapes of the model presets
// (model.LookupPreset) and of the LoRA step at SmolLM2-135M's shapes, all
// causal.
var presetShapes = []struct {
	name            string
	B, H, KVH, T, D int
}{{"tiny", 8, 4, 4, 64, 32}, {"small", 8, 8, 8, 256, 32}, {"medium", 4, 8, 8, 256, 64}, {"smollm2", 4, 9, 3, 256, 64}}

// BenchmarkPresetTiles times ForwardInto+BackwardInto (outputs reused, so
// no page faults of new tensors) on the small and SmolLM2 shapes for a grid
// of tile sizes; with BenchmarkTileSweep it chose DefaultBlockK.
func BenchmarkPresetTiles(b *testing.B) {
	for _, p := range presetShapes {
		if p.name != "small" && p.name != "smollm2" {
			continue
		}
		c := tcase{B: p.B, H: p.H, KVH: p.KVH, Tq: p.T, Tk: p.T, D: p.D, Causal: true}
		in := c.inputs(1)
		o, lse, err := Forward(in.q, in.k, in.v, c.opts())
		if err != nil {
			b.Fatal(err)
		}
		dq, dk, dv, err := Backward(in.q, in.k, in.v, o, lse, in.dO, c.opts())
		if err != nil {
			b.Fatal(err)
		}
		for _, bq := range []int{48, 96, 192} {
			for _, bk := range []int{64, 128, 256} {
				b.Run(fmt.Sprintf("%s/bq=%d/bk=%d", p.name, bq, bk), func(b *testing.B) {
					opts := c.opts()
					opts.BlockQ, opts.BlockK = bq, bk
					cpu0 := cputime.Process()
					for i := 0; i < b.N; i++ {
						if err := ForwardInto(o, lse, in.q, in.k, in.v, opts); err != nil {
							b.Fatal(err)
						}
						if err := BackwardInto(dq, dk, dv, in.q, in.k, in.v, o, lse, in.dO, opts); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric((cputime.Process()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/op")
				})
			}
		}
	}
}

// BenchmarkPresets times forward+backward on the attention shapes of the
// model presets (model.LookupPreset): tiny B=8 H=4 T=64 D=32, small B=8 H=8 T=256
// D=32, medium B=4 H=8 T=256 D=64, and of the LoRA step at SmolLM2-135M's
// shapes: B=4 H=9 KVH=3 T=256 D=64; causal.
func BenchmarkPresets(b *testing.B) {
	for _, p := range presetShapes {
		c := tcase{B: p.B, H: p.H, KVH: p.KVH, Tq: p.T, Tk: p.T, D: p.D, Causal: true}
		in := c.inputs(1)
		for _, impl := range []struct {
			name string
			fwd  fwdFunc
			bwd  bwdFunc
		}{{"flash", Forward, Backward}, {"naive", NaiveForward, NaiveBackward}} {
			b.Run(p.name+"/"+impl.name, func(b *testing.B) {
				opts := c.opts()
				cpu0 := cputime.Process()
				for i := 0; i < b.N; i++ {
					o, lse, err := impl.fwd(in.q, in.k, in.v, opts)
					if err != nil {
						b.Fatal(err)
					}
					if _, _, _, err := impl.bwd(in.q, in.k, in.v, o, lse, in.dO, opts); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric((cputime.Process()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/op")
			})
		}
	}
}
