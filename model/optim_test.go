package model

import (
	"errors"
	"math"
	"testing"

	"github.com/galleon-ml/galleon/internal/kernels"
)

func TestAdamWMatchesPyTorch(t *testing.T) {
	ps, err := NewParamSet([]ParamSpec{
		{Name: "w", Shape: []int{2, 2}, Decay: true},
		{Name: "b", Shape: []int{3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	copy(ps.Data, []float32{0.5, -1.25, 2.0, 0.1, 0.3, -0.7, 0.0})
	opt, err := NewAdamW(ps, AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range [][]float32{
		{0.1, -0.2, 0.3, 0.05, 1.0, -0.5, 0.25},
		{-0.3, 0.2, 0.0, 1.5, 0.0, 0.4, -2.0},
		{0.7, 0.7, -0.1, 0.2, 0.3, 0.3, 0.3},
	} {
		if err := opt.Step(g, 0.01); err != nil {
			t.Fatal(err)
		}
	}
	// torch.optim.AdamW (PyTorch 1.13) on the same parameters, groups and
	// gradients, lr 0.01, betas (0.9, 0.95), eps 1e-8, decay 0.1 on w only.
	want := []float64{0.48924410343170166, -1.2427574396133423, 1.974295735359192, 0.07544789463281631,
		0.27626970410346985, -0.6917411088943481, 0.0005454118363559246}
	for i, w := range want {
		if d := math.Abs(float64(ps.Data[i]) - w); d > 2e-7*math.Max(1, math.Abs(w)) {
			t.Errorf("param %d = %.9g, PyTorch gives %.9g", i, ps.Data[i], w)
		}
	}
}

func TestAdamWShardsEqualWhole(t *testing.T) {
	specs := []ParamSpec{{Name: "a", Shape: []int{5, 3}, Decay: true}, {Name: "b", Shape: []int{4}}, {Name: "c", Shape: []int{7}, Decay: true}}
	whole, _ := NewParamSet(specs)
	shard, _ := NewParamSet(specs)
	for i := range whole.Data {
		whole.Data[i] = float32(i%7) - 3
		shard.Data[i] = whole.Data[i]
	}
	ow, _ := NewAdamW(whole, DefaultAdamW())
	os, _ := NewAdamW(shard, DefaultAdamW())
	g := make([]float32, whole.Len())
	for step := 0; step < 4; step++ {
		for i := range g {
			g[i] = float32(math.Sin(float64(i*step + 1)))
		}
		if err := ow.Step(g, 1e-2); err != nil {
			t.Fatal(err)
		}
		// Uneven shards crossing parameter boundaries.
		for _, r := range [][2]int{{0, 4}, {4, 17}, {17, whole.Len()}} {
			if err := os.StepRange(g, 1e-2, r[0], r[1]); err != nil {
				t.Fatal(err)
			}
		}
		os.Advance()
	}
	for i := range whole.Data {
		if whole.Data[i] != shard.Data[i] {
			t.Fatalf("element %d: whole %v, sharded %v", i, whole.Data[i], shard.Data[i])
		}
	}
	if err := os.StepRange(g, 1, 5, 3); err == nil {
		t.Error("inverted range accepted")
	}
	if err := os.Step(g[:3], 1); err == nil {
		t.Error("short gradient accepted")
	}
}

func TestSchedule(t *testing.T) {
	s := Schedule{Peak: 1, Warmup: 10, Total: 110, MinRatio: 0.1}
	for _, c := range []struct {
		step int
		want float64
	}{{0, 0.1}, {9, 1}, {10, 1}, {60, 0.55}, {110, 0.1}, {500, 0.1}} {
		if got := s.LR(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("LR(%d) = %v, want %v", c.step, got, c.want)
		}
	}
	constant := Schedule{Peak: 3e-3, Warmup: 100}
	if constant.LR(5000) != 3e-3 || constant.LR(49) != 3e-3*50/100 {
		t.Errorf("warmup-only schedule: %v %v", constant.LR(5000), constant.LR(49))
	}
}

func TestGradNormAndClip(t *testing.T) {
	n, err := GradNorm([]float32{3, 4})
	if err != nil || n != 5 {
		t.Fatalf("GradNorm = %v, %v", n, err)
	}
	if _, err := GradNorm([]float32{1, float32(math.NaN())}); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("NaN gradient: %v", err)
	}
	if _, err := GradNorm([]float32{float32(math.Inf(1))}); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("Inf gradient: %v", err)
	}
	if c := ClipScale(5, 1); math.Abs(float64(c)-1/(5+1e-6)) > 1e-7 {
		t.Errorf("ClipScale(5,1) = %v", c)
	}
	if ClipScale(0.5, 1) != 1 || ClipScale(100, 0) != 1 {
		t.Error("ClipScale must not scale small norms or when disabled")
	}
}

// Shards of one optimizer may be stepped from several goroutines (run with
// -race): StepRange only reads the step count.
func TestAdamWStepRangeConcurrent(t *testing.T) {
	ps, _ := NewParamSet([]ParamSpec{{Name: "w", Shape: []int{1000}, Decay: true}})
	opt, _ := NewAdamW(ps, DefaultAdamW())
	g := make([]float32, ps.Len())
	for i := range g {
		g[i] = float32(i%13) - 6
	}
	done := make(chan error, 4)
	for s := 0; s < 4; s++ {
		go func(lo int) { done <- opt.StepRange(g, 1e-3, lo, lo+250) }(s * 250)
	}
	for s := 0; s < 4; s++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	opt.Advance()
	if opt.T != 1 {
		t.Fatalf("T = %d", opt.T)
	}
}

// TestAdamWStepScaledEqualsScaleThenStep checks the fused clipping against
// scaling the gradients first, bit for bit, over several chunks of the
// parallel update and decayed spans that cross chunk boundaries.
func TestAdamWStepScaledEqualsScaleThenStep(t *testing.T) {
	specs := []ParamSpec{{Name: "a", Shape: []int{97, 211}, Decay: true}, {Name: "b", Shape: []int{13}}, {Name: "c", Shape: []int{31, 1200}, Decay: true}, {Name: "d", Shape: []int{5}}}
	fused, plain := mustParams(t, specs), mustParams(t, specs)
	for i := range fused.Data {
		fused.Data[i] = float32(math.Sin(float64(i)))
		plain.Data[i] = fused.Data[i]
	}
	of, _ := NewAdamW(fused, DefaultAdamW())
	op, _ := NewAdamW(plain, DefaultAdamW())
	g := make([]float32, fused.Len())
	for step := 1; step <= 3; step++ {
		for i := range g {
			g[i] = float32(math.Cos(float64(i*step))) * 3
		}
		norm, err := GradNorm(g)
		if err != nil {
			t.Fatal(err)
		}
		s := ClipScale(norm, 1)
		if err := of.StepScaled(g, s, 1e-2); err != nil {
			t.Fatal(err)
		}
		gs := append([]float32(nil), g...)
		for i := range gs {
			gs[i] *= s
		}
		if err := op.Step(gs, 1e-2); err != nil {
			t.Fatal(err)
		}
	}
	for i := range fused.Data {
		if math.Float32bits(fused.Data[i]) != math.Float32bits(plain.Data[i]) || of.M[i] != op.M[i] || of.V[i] != op.V[i] {
			t.Fatalf("element %d: fused %v, scaled then stepped %v", i, fused.Data[i], plain.Data[i])
		}
	}
}

// TestGradNormThreads checks that the norm does not depend on the number of
// kernel threads, and agrees with a float64 sum.
func TestGradNormThreads(t *testing.T) {
	g := make([]float32, 300_001)
	var want float64
	for i := range g {
		g[i] = float32(math.Sin(float64(i)))
		want += float64(g[i]) * float64(g[i])
	}
	n1, err := GradNorm(g)
	if err != nil {
		t.Fatal(err)
	}
	prev := kernels.SetMaxThreads(1)
	n2, _ := GradNorm(g)
	kernels.SetMaxThreads(prev)
	if n1 != n2 {
		t.Errorf("GradNorm: %v on all threads, %v on one", n1, n2)
	}
	if math.Abs(n1-math.Sqrt(want)) > 1e-12*math.Sqrt(want) {
		t.Errorf("GradNorm = %v, float64 sum gives %v", n1, math.Sqrt(want))
	}
}

func mustParams(t *testing.T, specs []ParamSpec) *ParamSet {
	t.Helper()
	ps, err := NewParamSet(specs)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}
