// Command longcontext compares FlashAttention with the naive materialized
// attention over growing sequence lengths: time of a forward pass and of a
// forward+backward pass, and the peak heap each needs, per length T. The
// naive kernels stop at the first length whose score matrices would pass a
// memory cap. It prints a table, writes a PNG plot of time and memory
// against T, and with -json ends with one JSON line holding the table.
//
//	go run ./examples/longcontext                 # T = 1K … 16K, B=1, H=4, D=64, causal
//	go run ./examples/longcontext -tmax 4096 -json
package main

import (
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"sort"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/galleon-ml/galleon/attention"
	"github.com/galleon-ml/galleon/internal/report"
)

// config holds the command's flags.
type config struct {
	TMin, TMax   int
	Batch, Heads int
	KVHeads, Dim int
	Causal       bool
	Reps         int
	MemCapMiB    int64
	Workers      int
	Plot         string
	JSON         bool
	ModelT       int
	ModelSteps   int
}

// measurement is one implementation at one length. Nil fields in the JSON
// mean "not run" (over the memory cap).
type measurement struct {
	FwdMs     float64 `json:"fwd_ms"`
	FwdBwdMs  float64 `json:"fwdbwd_ms"`
	PeakBytes int64   `json:"peak_bytes"`
	// GFLOPs of the forward+backward pass, counting the causal half when
	// causal (as the benchmarks do).
	FwdBwdGFLOPs float64 `json:"fwdbwd_gflops"`
}

// row is one line of the table.
type row struct {
	T     int          `json:"T"`
	Flash *measurement `json:"flash"`
	Naive *measurement `json:"naive"`
	// Speedup is naive/flash forward+backward time, when both ran.
	Speedup float64 `json:"speedup,omitempty"`
}

// result is the JSON object printed with -json.
type result struct {
	Config config     `json:"config"`
	Rows   []row      `json:"rows"`
	Plot   string     `json:"plot,omitempty"`
	Model  []modelRun `json:"model,omitempty"`
}

func main() {
	var c config
	flag.IntVar(&c.TMin, "tmin", 1024, "shortest sequence length")
	flag.IntVar(&c.TMax, "tmax", 16384, "longest sequence length (lengths double from -tmin)")
	flag.IntVar(&c.Batch, "batch", 1, "batch size B")
	flag.IntVar(&c.Heads, "heads", 4, "query heads H")
	flag.IntVar(&c.KVHeads, "kvheads", 0, "key/value heads (0: same as -heads)")
	flag.IntVar(&c.Dim, "dim", 64, "head dimension D")
	flag.BoolVar(&c.Causal, "causal", true, "causal mask")
	flag.IntVar(&c.Reps, "reps", 2, "timed repetitions per length (the fastest is reported)")
	flag.Int64Var(&c.MemCapMiB, "memcap", 4096, "memory cap in MiB: the naive kernels stop at the first length whose score matrices would need more")
	flag.IntVar(&c.Workers, "workers", 0, "goroutines (0: GOMAXPROCS)")
	flag.StringVar(&c.Plot, "plot", "longcontext.png", "PNG plot of time and memory against T (empty: none)")
	flag.BoolVar(&c.JSON, "json", false, "print the table as one JSON object on the last line")
	flag.IntVar(&c.ModelT, "model-t", 4096, "also train the GPT at this context length with flash and naive attention (0: skip)")
	flag.IntVar(&c.ModelSteps, "model-steps", 3, "timed training steps of the GPT run")
	flag.Parse()
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if err := run(c, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "longcontext:", err)
		os.Exit(1)
	}
}

func run(c config, stdout, stderr io.Writer) error {
	if c.TMin <= 0 || c.TMax < c.TMin || c.Batch <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.Dim <= 0 || c.Reps <= 0 {
		return errors.New("flags: lengths, sizes and -reps must be positive, -tmax ≥ -tmin")
	}
	if c.ModelT < 0 || (c.ModelT > 0 && c.ModelSteps <= 0) {
		return errors.New("flags: -model-t must be ≥ 0 and -model-steps positive")
	}
	var lengths []int
	for t := c.TMin; t <= c.TMax; t *= 2 {
		lengths = append(lengths, t)
	}
	opts := attention.Options{Causal: c.Causal, Workers: c.Workers}
	capBytes := c.MemCapMiB << 20

	// Plan the runs: the naive kernels stop at the first length over the
	// cap. Progress is weighted by the expected time: T² per run, the naive
	// kernels about ten times the flash ones (measured here).
	// The forward's scores may still be uncollected when the backward
	// allocates its two matrices, so the peak is counted as all three.
	naiveNeed := func(t int) int64 {
		return attention.NaiveBytes(c.Batch, c.Heads, t, t, false) + attention.NaiveBytes(c.Batch, c.Heads, t, t, true) +
			4*int64(c.Batch*t*c.Dim*(c.Heads+2*c.KVHeads))
	}
	const naiveWeight = 10
	var total float64
	naiveUpTo := 0 // the naive kernels run for lengths[:naiveUpTo]
	for i, t := range lengths {
		w := float64(t) * float64(t)
		total += w
		if naiveUpTo == i && naiveNeed(t) <= capBytes {
			naiveUpTo = i + 1
			total += naiveWeight * w
		}
	}
	bar := report.NewProgress(stderr, "starting")
	var done float64
	progress := func(weight float64, label string) func(step, steps int) {
		start := done
		done += weight
		return func(step, steps int) {
			bar.Update((start+weight*float64(step)/float64(steps))/total, label)
		}
	}
	rows := make([]row, 0, len(lengths))
	for i, t := range lengths {
		r := row{T: t}
		in, err := newInputs(c, t)
		if err != nil {
			return err
		}
		w := float64(t) * float64(t)
		if r.Flash, err = measure(c, in, opts, attention.Forward, attention.Backward, progress(w, fmt.Sprintf("T=%d flash", t))); err != nil {
			return err
		}
		if i < naiveUpTo {
			if r.Naive, err = measure(c, in, opts, attention.NaiveForward, attention.NaiveBackward, progress(naiveWeight*w, fmt.Sprintf("T=%d naive", t))); err != nil {
				return err
			}
			r.Speedup = r.Naive.FwdBwdMs / r.Flash.FwdBwdMs
		}
		rows = append(rows, r)
	}
	bar.Finish("done")

	printTable(stdout, c, rows)
	res := result{Config: c, Rows: rows}
	if c.Plot != "" {
		if err := savePlot(c, rows, c.Plot); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "plot: %s\n", c.Plot)
		res.Plot = c.Plot
	}
	if c.ModelT > 0 {
		var err error
		if res.Model, err = runModel(c, stdout, stderr); err != nil {
			return err
		}
	}
	if c.JSON {
		return report.PrintJSON(stdout, res)
	}
	return nil
}

// inputs holds one length's random q, k, v and output gradient.
type inputs struct {
	q, k, v, dO attention.Tensor
}

func newInputs(c config, t int) (inputs, error) {
	rng := rand.New(rand.NewPCG(uint64(t), 1))
	mk := func(h int) (attention.Tensor, error) {
		data := make([]float32, c.Batch*h*t*c.Dim)
		for i := range data {
			data[i] = float32(rng.NormFloat64())
		}
		return attention.Contiguous(data, c.Batch, h, t, c.Dim)
	}
	var in inputs
	var err error
	for _, x := range []struct {
		dst *attention.Tensor
		h   int
	}{{&in.q, c.Heads}, {&in.k, c.KVHeads}, {&in.v, c.KVHeads}, {&in.dO, c.Heads}} {
		if *x.dst, err = mk(x.h); err != nil {
			return in, err
		}
	}
	return in, nil
}

type fwdFunc func(q, k, v attention.Tensor, opts attention.Options) (attention.Tensor, []float32, error)
type bwdFunc func(q, k, v, o attention.Tensor, lse []float32, dO attention.Tensor, opts attention.Options) (attention.Tensor, attention.Tensor, attention.Tensor, error)

// measure times the forward and the forward+backward pass (fastest of
// c.Reps) and samples the peak heap of a cold forward+backward pass, with
// the kernels' scratch pools emptied first. It reports each finished run to
// progress.
func measure(c config, in inputs, opts attention.Options, fwd fwdFunc, bwd bwdFunc, progress func(step, steps int)) (*measurement, error) {
	// A cold forward+backward, c.Reps forward passes (a third of the work
	// of forward+backward) and c.Reps forward+backward passes.
	steps, done := 3+4*c.Reps, 0
	progress(0, steps)
	tick := func(backward bool) {
		done++
		if backward {
			done += 2
		}
		progress(done, steps)
	}
	step := func(backward bool) error {
		o, lse, err := fwd(in.q, in.k, in.v, opts)
		if err != nil || !backward {
			return err
		}
		_, _, _, err = bwd(in.q, in.k, in.v, o, lse, in.dO, opts)
		return err
	}
	m := &measurement{}
	// Two collections empty sync.Pools (one moves them to the victim cache).
	runtime.GC()
	runtime.GC()
	peak, err := peakHeap(func() error { return step(true) })
	if err != nil {
		return nil, err
	}
	tick(true)
	m.PeakBytes = peak
	best := func(backward bool) (float64, error) {
		ms := make([]float64, c.Reps)
		for i := range ms {
			start := time.Now()
			if err := step(backward); err != nil {
				return 0, err
			}
			ms[i] = float64(time.Since(start).Microseconds()) / 1e3
			tick(backward)
		}
		sort.Float64s(ms)
		return ms[0], nil
	}
	if m.FwdMs, err = best(false); err != nil {
		return nil, err
	}
	if m.FwdBwdMs, err = best(true); err != nil {
		return nil, err
	}
	t := float64(in.q.T)
	flops := 4 * float64(c.Batch*c.Heads*c.Dim) * t * t * 3.5
	if c.Causal {
		flops /= 2
	}
	m.FwdBwdGFLOPs = flops / (m.FwdBwdMs / 1e3) / 1e9
	return m, nil
}

// peakHeap runs f and returns the largest heap occupancy seen while it ran,
// above the occupancy before it started, sampled every millisecond.
func peakHeap(f func() error) (int64, error) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() int64 {
		metrics.Read(sample)
		return int64(sample[0].Value.Uint64())
	}
	base := read()
	var peak int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, read())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	err := f()
	close(stop)
	wg.Wait()
	peak = max(peak, read())
	return peak - base, err
}

func printTable(w io.Writer, c config, rows []row) {
	workers := c.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	fmt.Fprintf(w, "attention B=%d H=%d KVH=%d D=%d causal=%t, %d goroutines (fastest of %d runs; peak = heap growth of a cold fwd+bwd)\n",
		c.Batch, c.Heads, c.KVHeads, c.Dim, c.Causal, workers, c.Reps)
	fmt.Fprintf(w, "%7s | %9s %11s %10s %9s | %9s %11s %10s | %7s\n",
		"T", "flash fwd", "flash f+b", "flash peak", "GFLOP/s", "naive fwd", "naive f+b", "naive peak", "speedup")
	for _, r := range rows {
		f := r.Flash
		fmt.Fprintf(w, "%7d | %7.1fms %9.1fms %7.1fMiB %9.1f | ", r.T, f.FwdMs, f.FwdBwdMs, mib(f.PeakBytes), f.FwdBwdGFLOPs)
		if n := r.Naive; n != nil {
			fmt.Fprintf(w, "%7.1fms %9.1fms %7.1fMiB | %6.1f×\n", n.FwdMs, n.FwdBwdMs, mib(n.PeakBytes), r.Speedup)
		} else {
			fmt.Fprintf(w, "%9s %11s %10s | %7s\n", "—", "—", "over cap", "—")
		}
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// savePlot draws time (top) and peak memory (bottom) against T, log–log.
func savePlot(c config, rows []row, path string) error {
	series := func(get func(*measurement) float64) (flash, naive plotter.XYs) {
		for _, r := range rows {
			flash = append(flash, plotter.XY{X: float64(r.T), Y: get(r.Flash)})
			if r.Naive != nil {
				naive = append(naive, plotter.XY{X: float64(r.T), Y: get(r.Naive)})
			}
		}
		return flash, naive
	}
	panel := func(title, ylabel string, get func(*measurement) float64) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "sequence length T"
		p.Y.Label.Text = ylabel
		p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
		p.X.Tick.Marker, p.Y.Tick.Marker = lengthTicks(rows), plot.LogTicks{Prec: -1}
		p.Add(plotter.NewGrid())
		p.Legend.Top, p.Legend.Left = true, true
		flash, naive := series(get)
		for i, s := range []struct {
			name string
			xys  plotter.XYs
		}{{"flash", flash}, {fmt.Sprintf("naive (cap %d MiB)", c.MemCapMiB), naive}} {
			if len(s.xys) == 0 {
				continue
			}
			line, points, err := plotter.NewLinePoints(s.xys)
			if err != nil {
				return nil, err
			}
			col := plotColors[i]
			line.Color, points.Color = col, col
			line.Width = vg.Points(1.5)
			p.Add(line, points)
			p.Legend.Add(s.name, line, points)
		}
		return p, nil
	}
	pt, err := panel(fmt.Sprintf("attention forward+backward, B=%d H=%d D=%d", c.Batch, c.Heads, c.Dim), "time (ms)",
		func(m *measurement) float64 { return m.FwdBwdMs })
	if err != nil {
		return err
	}
	pm, err := panel("peak heap of forward+backward", "MiB", func(m *measurement) float64 { return max(mib(m.PeakBytes), 1e-3) })
	if err != nil {
		return err
	}
	img := vgimg.New(7*vg.Inch, 8*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadX: vg.Points(6), PadY: vg.Points(18)}
	canvases := plot.Align([][]*plot.Plot{{pt}, {pm}}, tiles, dc)
	pt.Draw(canvases[0][0])
	pm.Draw(canvases[1][0])
	return report.WriteAtomic(path, func(w io.Writer) error {
		_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
		return err
	})
}

// plotColors are the flash and naive line colors.
var plotColors = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255},
	color.RGBA{R: 214, G: 39, B: 40, A: 255},
}

// lengthTicks labels the x axis with the measured lengths (1K, 2K, …).
func lengthTicks(rows []row) plot.ConstantTicks {
	var ticks plot.ConstantTicks
	for _, r := range rows {
		label := fmt.Sprint(r.T)
		if r.T%1024 == 0 {
			label = fmt.Sprintf("%dK", r.T/1024)
		}
		ticks = append(ticks, plot.Tick{Value: float64(r.T), Label: label})
	}
	return ticks
}
