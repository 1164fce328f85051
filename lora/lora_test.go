package lora

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/internal/nn"
	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func testModelConfig(dModel, layers int, tied bool) model.Config {
	return model.Config{Vocab: 256, DModel: dModel, Layers: layers, Heads: 4, KVHeads: 4, SeqLen: 16, MLPRatio: 4,
		TiedEmbeddings: tied, LayerNormEps: 1e-5, Attention: model.AttentionFlash}
}

func newBase(t testing.TB, dModel, layers int) *model.Model {
	t.Helper()
	m, err := model.New(testModelConfig(dModel, layers, true), 7)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func loraConfig() Config {
	return Config{R: 4, Alpha: 8, Dropout: 0, TargetModules: []string{AllLinear}, Seed: 3}
}

func randIDs(n int, seed uint64) []int32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(256))
	}
	return ids
}

// randomizeB gives every B of a non-zero values so the adapter changes the
// model.
func randomizeB(a *Adapter, seed uint64, std float64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	for _, mod := range a.Modules {
		b := a.B(mod).Data
		for i := range b {
			b[i] = float32(rng.NormFloat64() * std)
		}
	}
}

func logits(t testing.TB, m *model.Model, ids []int32, B, T int) []float32 {
	t.Helper()
	out, err := m.Logits(ids, B, T)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

func TestConfigValidation(t *testing.T) {
	m, err := model.New(testModelConfig(32, 2, false), 1) // untied: has lm_head
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"rank zero", Config{R: 0, Alpha: 1, TargetModules: []string{AllLinear}}, "r = 0"},
		{"negative rank", Config{R: -2, Alpha: 1, TargetModules: []string{AllLinear}}, "r = -2"},
		{"alpha", Config{R: 2, Alpha: 0, TargetModules: []string{AllLinear}}, "lora_alpha"},
		{"dropout", Config{R: 2, Alpha: 1, Dropout: 1, TargetModules: []string{AllLinear}}, "dropout"},
		{"no targets", Config{R: 2, Alpha: 1}, "no target modules"},
		{"init", Config{R: 2, Alpha: 1, TargetModules: []string{AllLinear}, Init: "xavier"}, "init"},
		{"bad pattern", Config{R: 2, Alpha: 1, TargetModules: []string{"re:("}}, "pattern"},
		{"matches nothing", Config{R: 2, Alpha: 1, TargetModules: []string{"q_proj"}}, "transformer.h.0.attn.c_attn"},
		{"all excluded", Config{R: 2, Alpha: 1, TargetModules: []string{"c_fc"}, ExcludeModules: []string{"mlp.c_fc"}}, "leave no layer"},
	} {
		_, err := cfgResolve(tc.cfg, m)
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want ErrConfig mentioning %q", tc.name, err, tc.want)
		}
	}
	check := func(targets, exclude []string, want ...string) {
		t.Helper()
		got, err := cfgResolve(Config{R: 2, Alpha: 1, TargetModules: targets, ExcludeModules: exclude}, m)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("targets %v exclude %v: got %v, want %v", targets, exclude, got, want)
		}
	}
	all := m.LinearNames()
	check([]string{AllLinear}, nil, all[:len(all)-1]...) // the head is never adapted by all-linear
	check([]string{"lm_head"}, nil, "lm_head")           // unless asked
	check([]string{"c_attn"}, nil, "transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn")
	check([]string{"transformer.h.1.mlp.c_proj"}, nil, "transformer.h.1.mlp.c_proj")
	check([]string{`re:transformer\.h\.0\..*c_proj`}, nil, "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj")
	check([]string{AllLinear}, []string{"mlp.c_fc", "re:transformer\\.h\\.1\\..*"},
		"transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj")

	lm, err := Apply(m, Config{R: 2, Alpha: 1, TargetModules: []string{AllLinear}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lm.AddAdapter("default", loraConfig()); err == nil {
		t.Error("duplicate adapter name accepted")
	}
	if _, err := lm.AddAdapter("bad name", loraConfig()); err == nil {
		t.Error("adapter name with a space accepted")
	}
	if _, err := Wrap(m); err == nil {
		t.Error("wrapping an already adapted model twice accepted")
	}
}

func cfgResolve(c Config, m *model.Model) ([]string, error) { return c.Resolve(m) }

func TestInit(t *testing.T) {
	m := newBase(t, 32, 1)
	lm, err := Apply(m, Config{R: 4, Alpha: 8, TargetModules: []string{"mlp.c_proj"}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	a := lm.Active()
	A, B := a.A("transformer.h.0.mlp.c_proj"), a.B("transformer.h.0.mlp.c_proj")
	if !slices.Equal(A.Shape, []int{4, 128}) || !slices.Equal(B.Shape, []int{32, 4}) {
		t.Fatalf("shapes A %v B %v, want [4 128] and [32 4] (PEFT: [r, in], [out, r])", A.Shape, B.Shape)
	}
	bound := 1 / math.Sqrt(128)
	var maxA float64
	for _, v := range A.Data {
		maxA = max(maxA, math.Abs(float64(v)))
	}
	if maxA > bound || maxA < 0.8*bound {
		t.Errorf("kaiming-uniform A: max |A| = %v, want close to and below 1/√in = %v", maxA, bound)
	}
	for _, v := range B.Data {
		if v != 0 {
			t.Fatal("B is not zero at initialization")
		}
	}
	if a.Scale() != 2 {
		t.Errorf("scale %v, want alpha/r = 2", a.Scale())
	}
	if s := (Config{R: 4, Alpha: 8, UseRSLoRA: true}).Scale(); s != 4 {
		t.Errorf("rsLoRA scale %v, want alpha/√r = 4", s)
	}
	if got := lm.TrainableParams(); got != 4*128+32*4 {
		t.Errorf("trainable parameters %d, want %d", got, 4*128+32*4)
	}
}

// TestZeroBMatchesBase: a fresh adapter (B = 0) changes no logit, on the
// inference path and in the training graph (with dropout on).
func TestZeroBMatchesBase(t *testing.T) {
	const B, T = 2, 16
	m := newBase(t, 32, 2)
	ids, tg := randIDs(B*T, 1), randIDs(B*T, 2)
	want := logits(t, m, ids, B, T)
	r0, err := m.NewReplica(B, T)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r0.ForwardBackward(ids, tg, 1); err != nil {
		t.Fatal(err)
	}
	wantGraph := slices.Clone(r0.Logits())

	cfg := loraConfig()
	cfg.Dropout = 0.3
	if _, err := Apply(m, cfg); err != nil {
		t.Fatal(err)
	}
	if got := logits(t, m, ids, B, T); !slices.Equal(got, want) {
		t.Errorf("inference logits with B = 0 differ from the base's by %g", maxDiff(got, want))
	}
	r1, err := m.NewReplica(B, T)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r1.ForwardBackward(ids, tg, 1); err != nil {
		t.Fatal(err)
	}
	if got := r1.Logits(); !slices.Equal(got, wantGraph) {
		t.Errorf("graph logits with B = 0 differ from the base's by %g", maxDiff(got, wantGraph))
	}
}

func TestMergeUnmerge(t *testing.T) {
	const B, T = 2, 16
	m := newBase(t, 32, 2)
	base := slices.Clone(m.Weights.Data)
	ids := randIDs(B*T, 3)
	baseLogits := logits(t, m, ids, B, T)
	cfg := loraConfig()
	cfg.Dropout = 0.1
	lm, err := Apply(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	randomizeB(lm.Active(), 1, 0.05)
	adapted := logits(t, m, ids, B, T)
	if d := maxDiff(adapted, baseLogits); d < 1e-3 {
		t.Fatalf("adapter barely changes the logits (%g); the test would prove nothing", d)
	}
	rep, err := lm.Merge()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Modules != 8 || rep.MaxAbsErr != 0 {
		t.Errorf("merge report %+v, want 8 modules and no error", rep)
	}
	merged := logits(t, m, ids, B, T)
	if d := maxDiff(merged, adapted); d > 1e-5 {
		t.Errorf("merged logits differ from the adapted model's by %g > 1e-5", d)
	}
	if _, err := lm.Merge(); err == nil {
		t.Error("merging twice accepted")
	}
	if err := lm.Disable(); err == nil {
		t.Error("disable while merged accepted")
	}
	if _, err := lm.Unmerge(); err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(m.Weights.Data, base); d > 1e-6 {
		t.Errorf("unmerge leaves the weights %g from the original (> 1e-6)", d)
	}
	if d := maxDiff(logits(t, m, ids, B, T), adapted); d > 1e-5 {
		t.Errorf("unmerged adapted logits moved by %g", d)
	}

	// Merge and unload gives a plain model with the adapted behaviour.
	plain, rep, err := lm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Modules != 8 || plain != m {
		t.Errorf("merge-and-unload: report %+v", rep)
	}
	for _, name := range plain.LinearNames() {
		l, _ := plain.Linear(name)
		if _, ok := l.(*model.DenseLinear); !ok {
			t.Fatalf("%s is still a %T after unload", name, l)
		}
	}
	if got := plain.Trainable(); got != plain.Weights {
		t.Error("unloaded model's trainable set is not its weights")
	}
	if len(plain.ParamNames()) != len(plain.Weights.Params) {
		t.Errorf("unloaded model still binds adapter parameters: %d names", len(plain.ParamNames()))
	}
	if d := maxDiff(logits(t, plain, ids, B, T), adapted); d > 1e-5 {
		t.Errorf("unloaded model's logits differ from the adapted model's by %g", d)
	}
	// The merged model saves and reloads as an ordinary checkpoint.
	path := filepath.Join(t.TempDir(), "merged.safetensors")
	if err := plain.Save(path); err != nil {
		t.Fatal(err)
	}
	re, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(re.Weights.Data, plain.Weights.Data) {
		t.Error("merged checkpoint round trip changed the weights")
	}
}

func TestAdaptersAsObjects(t *testing.T) {
	const B, T = 1, 16
	m := newBase(t, 32, 2)
	ids := randIDs(B*T, 5)
	baseLogits := logits(t, m, ids, B, T)
	lm, err := Apply(m, loraConfig())
	if err != nil {
		t.Fatal(err)
	}
	randomizeB(lm.Active(), 1, 0.05)
	cfg2 := loraConfig()
	cfg2.TargetModules = []string{"c_attn"}
	cfg2.R = 2
	second, err := lm.AddAdapter("second", cfg2)
	if err != nil {
		t.Fatal(err)
	}
	randomizeB(second, 2, 0.05)
	if lm.Active().Name != DefaultAdapter {
		t.Fatalf("active %q after adding a second adapter, want the first", lm.Active().Name)
	}
	first := logits(t, m, ids, B, T)
	if err := lm.SetActive("second"); err != nil {
		t.Fatal(err)
	}
	if m.Trainable() != second.Params {
		t.Error("the active adapter is not the trainable set")
	}
	sec := logits(t, m, ids, B, T)
	if maxDiff(sec, first) < 1e-4 || maxDiff(sec, baseLogits) < 1e-4 {
		t.Error("switching adapters does not change the logits")
	}
	if err := lm.Disable(); err != nil {
		t.Fatal(err)
	}
	if got := logits(t, m, ids, B, T); !slices.Equal(got, baseLogits) {
		t.Errorf("disabled adapters: logits differ from the base's by %g", maxDiff(got, baseLogits))
	}
	lm.Enable()
	if got := logits(t, m, ids, B, T); !slices.Equal(got, sec) {
		t.Error("enable does not restore the active adapter")
	}
	if err := lm.SetActive("nope"); err == nil {
		t.Error("activating a missing adapter accepted")
	}
	if err := lm.DeleteAdapter("second"); err != nil {
		t.Fatal(err)
	}
	if lm.Active() != nil || !slices.Equal(lm.Adapters(), []string{DefaultAdapter}) {
		t.Errorf("after delete: active %v, adapters %v", lm.Active(), lm.Adapters())
	}
	if got := logits(t, m, ids, B, T); !slices.Equal(got, baseLogits) {
		t.Error("no active adapter: logits differ from the base's")
	}
	if err := lm.SetActive(DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	if got := logits(t, m, ids, B, T); !slices.Equal(got, first) {
		t.Error("reactivating the first adapter does not restore its logits")
	}
}

// TestAdaptedLinearGradients checks the gradients of one adapted linear
// layer's graph (base frozen, x, A and B differentiated) against central
// differences of a float64 implementation of the same function.
func TestAdaptedLinearGradients(t *testing.T) {
	// Odd widths take the Sgemm path; widths of 16·k, rank ≤ 8, the
	// kernels' low-rank products where the CPU has them.
	for _, sh := range [][4]int{{5, 7, 6, 3}, {5, 32, 16, 8}, {3, 16, 48, 2}} {
		t.Run(fmt.Sprint(sh), func(t *testing.T) { testAdaptedLinearGradients(t, sh[0], sh[1], sh[2], sh[3]) })
	}
}

func testAdaptedLinearGradients(t *testing.T, rows, in, out, r int) {
	const scale = 1.5
	rng := rand.New(rand.NewPCG(9, 9))
	randv := func(n int, std float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64() * std
		}
		return v
	}
	x, W, b, A, Bm, R := randv(rows*in, 1), randv(in*out, 0.5), randv(out, 0.1), randv(r*in, 0.5), randv(out*r, 0.5), randv(rows*out, 1)

	// Reference: L = Σ R∘(x·W + b + scale·(x·Aᵀ)·Bᵀ).
	loss := func(x, A, Bm []float64) float64 {
		var L float64
		for i := 0; i < rows; i++ {
			h := make([]float64, r)
			for k := 0; k < r; k++ {
				for j := 0; j < in; j++ {
					h[k] += x[i*in+j] * A[k*in+j]
				}
			}
			for o := 0; o < out; o++ {
				y := b[o]
				for j := 0; j < in; j++ {
					y += x[i*in+j] * W[j*out+o]
				}
				for k := 0; k < r; k++ {
					y += scale * h[k] * Bm[o*r+k]
				}
				L += R[i*out+o] * y
			}
		}
		return L
	}
	fd := func(v []float64, f func() float64) []float64 {
		g := make([]float64, len(v))
		const eps = 1e-6
		for i := range v {
			old := v[i]
			v[i] = old + eps
			lp := f()
			v[i] = old - eps
			lm := f()
			v[i] = old
			g[i] = (lp - lm) / (2 * eps)
		}
		return g
	}
	f := func() float64 { return loss(x, A, Bm) }
	wantX, wantA, wantB := fd(x, f), fd(A, f), fd(Bm, f)

	// The adapter adds onto a copy of the base output, or onto the base
	// output itself (what Layer does for the bases it knows).
	for _, inPlace := range []bool{false, true} {
		g := G.NewGraph()
		node := func(name string, v []float64, shape ...int) *G.Node {
			f32 := make([]float32, len(v))
			for i := range v {
				f32[i] = float32(v[i])
			}
			return G.NodeFromAny(g, tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f32)), G.WithName(name))
		}
		xn, wn, bn := node("x", x, rows, in), node("W", W, in, out), node("b", b, out)
		an, bm, rn := node("A", A, r, in), node("B", Bm, out, r), node("R", R, rows, out)
		base, err := nn.Linear(xn, wn, bn, nn.LinearOpts{})
		if err != nil {
			t.Fatal(err)
		}
		h, err := newDown(xn, an, 0, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		y, err := newUpAdd(base, h, bm, scale, inPlace)
		if err != nil {
			t.Fatal(err)
		}
		cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, rn))))
		grads, err := G.Grad(cost, xn, an, bm)
		if err != nil {
			t.Fatal(err)
		}
		if wn.Deriv() != nil || bn.Deriv() != nil {
			t.Error("the frozen base weight or bias has a derivative node")
		}
		vm := G.NewTapeMachine(g)
		defer vm.Close()
		// Two runs: the second must not see the first's update (the base
		// op recomputes the memory that the adapter added onto).
		var first []float32
		for run := 0; run < 2; run++ {
			vm.Reset()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			yv := y.Value().Data().([]float32)
			if run == 0 {
				first = slices.Clone(yv)
			} else if !slices.Equal(first, yv) {
				t.Errorf("inPlace=%t: the second run's output differs from the first's", inPlace)
			}
		}
		for i, want := range [][]float64{wantX, wantA, wantB} {
			got := grads[i].Value().Data().([]float32)
			for j := range want {
				if d := math.Abs(float64(got[j]) - want[j]); d > 1e-4*(1+math.Abs(want[j])) {
					t.Errorf("inPlace=%t: gradient %d[%d] = %v, float64 reference %v", inPlace, i, j, got[j], want[j])
				}
			}
		}
	}
}

// TestDropout checks the down-projection's fused dropout: the rate, the
// inverted scaling, a new mask every run replayed identically by a new op
// with the same seed, and gradients (for x and A) that apply the forward
// run's mask.
func TestDropout(t *testing.T) {
	// With in = 41, rows·in spans two of the op's row blocks, and rows do
	// not start on 64-element mask words: the Sgemm path. With in = 48 the
	// kernels' low-rank products run where the CPU has them, and the mask
	// is drawn in several chunks (maskGrainWords).
	for _, in := range []int{41, 48} {
		t.Run(fmt.Sprintf("in=%d", in), func(t *testing.T) { testDropout(t, in) })
	}
}

func testDropout(t *testing.T, in int) {
	const rows, r, p = 7001, 3, 0.25
	if rows*in <= 64*maskGrainWords {
		t.Fatalf("%d elements: the mask is drawn in one chunk", rows*in)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	x, A, R := make([]float32, rows*in), make([]float32, r*in), make([]float32, rows*r)
	for _, v := range [][]float32{x, A, R} {
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
	}
	type runOut struct{ mask, h, dx, dA []float32 }
	run := func() []runOut {
		g := G.NewGraph()
		xn := G.NodeFromAny(g, tensor.New(tensor.WithShape(rows, in), tensor.WithBacking(x)), G.WithName("x"))
		an := G.NodeFromAny(g, tensor.New(tensor.WithShape(r, in), tensor.WithBacking(A)), G.WithName("A"))
		// The op's output is hᵀ: weigh it with Rᵀ.
		rt := make([]float32, r*rows)
		for i := range rows {
			for j := range r {
				rt[j*rows+i] = R[i*r+j]
			}
		}
		rn := G.NodeFromAny(g, tensor.New(tensor.WithShape(r, rows), tensor.WithBacking(rt)), G.WithName("Rᵀ"))
		h, err := newDown(xn, an, p, nil, 42)
		if err != nil {
			t.Fatal(err)
		}
		op := h.Op().(*downOp)
		cost := G.Must(G.Sum(G.Must(G.HadamardProd(h, rn))))
		grads, err := G.Grad(cost, xn, an)
		if err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g)
		defer vm.Close()
		var outs []runOut
		for k := 0; k < 3; k++ {
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			// The chunks drew the mask one call draws.
			whole := make([]uint64, len(op.mask))
			if err := nn.DropoutBits(whole, rows*in, p, op.own.Seed, op.own.Step, op.stream, 0); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(whole, op.mask) {
				t.Fatalf("run %d: the mask drawn in chunks differs from one draw", k)
			}
			m := make([]float32, rows*in)
			for i := range m {
				m[i] = float32(op.mask[i/64]>>(i%64)&1) / (1 - p)
			}
			outs = append(outs, runOut{m, slices.Clone(h.Value().Data().([]float32)),
				slices.Clone(grads[0].Value().Data().([]float32)), slices.Clone(grads[1].Value().Data().([]float32))})
			vm.Reset()
		}
		return outs
	}
	o1, o2 := run(), run()
	for k, o := range o1 {
		if !slices.Equal(o.h, o2[k].h) || !slices.Equal(o.mask, o2[k].mask) {
			t.Errorf("run %d: a new op with the same seed draws another mask", k)
		}
		if k > 0 && slices.Equal(o.mask, o1[k-1].mask) {
			t.Errorf("run %d reuses the previous mask", k)
		}
		dropped := 0
		for _, m := range o.mask {
			if m == 0 {
				dropped++
			}
		}
		if rate := float64(dropped) / float64(rows*in); math.Abs(rate-p) > 0.03 {
			t.Errorf("dropped %.3f of the elements, want about %v", rate, p)
		}
		// float64 reference with the run's mask: h = (x∘m)·Aᵀ, dx = (R·A)∘m,
		// dA = Rᵀ·(x∘m).
		for i := 0; i < rows; i++ {
			for j := 0; j < r; j++ {
				var hv float64
				for c := 0; c < in; c++ {
					hv += float64(x[i*in+c]*o.mask[i*in+c]) * float64(A[j*in+c])
				}
				if math.Abs(hv-float64(o.h[j*rows+i])) > 1e-4 {
					t.Fatalf("run %d: h[%d,%d] = %v, reference %v", k, i, j, o.h[j*rows+i], hv)
				}
			}
			for c := 0; c < in; c++ {
				var dx float64
				for j := 0; j < r; j++ {
					dx += float64(R[i*r+j]) * float64(A[j*in+c])
				}
				dx *= float64(o.mask[i*in+c])
				if math.Abs(dx-float64(o.dx[i*in+c])) > 1e-4 {
					t.Fatalf("run %d: dx[%d,%d] = %v, reference %v", k, i, c, o.dx[i*in+c], dx)
				}
			}
		}
		for j := 0; j < r; j++ {
			for c := 0; c < in; c++ {
				var da float64
				for i := 0; i < rows; i++ {
					da += float64(R[i*r+j]) * float64(x[i*in+c]*o.mask[i*in+c])
				}
				if math.Abs(da-float64(o.dA[j*in+c])) > 1e-3 {
					t.Fatalf("run %d: dA[%d,%d] = %v, reference %v", k, j, c, o.dA[j*in+c], da)
				}
			}
		}
	}
}

// TestModelGradients compares the adapter gradients of a whole-model
// training graph with central differences of the loss on the inference
// path.
func TestModelGradients(t *testing.T) {
	const B, T = 2, 8
	m := newBase(t, 32, 2)
	lm, err := Apply(m, loraConfig())
	if err != nil {
		t.Fatal(err)
	}
	a := lm.Active()
	randomizeB(a, 4, 0.3)
	ids, tg := randIDs(B*T, 6), randIDs(B*T, 7)
	r, err := m.NewReplica(B, T)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if len(r.Grad) != a.NumParams() {
		t.Fatalf("replica gradient buffer has %d elements, want the adapter's %d", len(r.Grad), a.NumParams())
	}
	if _, err := r.ForwardBackward(ids, tg, 1); err != nil {
		t.Fatal(err)
	}
	// The largest gradients of each matrix kind, so float32 differences
	// resolve them.
	type entry struct {
		i int
		g float32
	}
	var picks []entry
	for _, p := range a.Params.Params {
		best := entry{p.Offset, 0}
		for i := p.Offset; i < p.Offset+p.Size(); i++ {
			if math.Abs(float64(r.Grad[i])) > math.Abs(float64(best.g)) {
				best = entry{i, r.Grad[i]}
			}
		}
		picks = append(picks, best)
	}
	const eps = 2e-3
	checked := 0
	for _, e := range picks {
		if math.Abs(float64(e.g)) < 5e-3 {
			continue
		}
		old := a.Params.Data[e.i]
		a.Params.Data[e.i] = old + eps
		lp, err := m.Loss(ids, tg, B, T)
		if err != nil {
			t.Fatal(err)
		}
		a.Params.Data[e.i] = old - eps
		lmi, err := m.Loss(ids, tg, B, T)
		if err != nil {
			t.Fatal(err)
		}
		a.Params.Data[e.i] = old
		want := (lp - lmi) / (2 * eps)
		if d := math.Abs(float64(e.g) - want); d > 0.03*math.Abs(want)+2e-4 {
			t.Errorf("gradient of %d: graph %v, finite differences %v", e.i, e.g, want)
		}
		checked++
	}
	t.Logf("checked %d of %d matrices against finite differences", checked, len(picks))
	if checked < len(picks)/2 {
		t.Fatalf("only %d of %d matrices had gradients large enough to check", checked, len(picks))
	}
}

// TestTrainingFreezesBase trains an adapter a few steps with dropout: the
// base weights stay bit-identical, gradient buffers and optimizer state
// have the adapter's size, the base's weight and bias nodes have no
// derivative (so the fused linear op computes no xᵀ·dy for them), and the
// run replays exactly.
func TestTrainingFreezesBase(t *testing.T) {
	train := func() (*Model, []float32, *model.Trainer) {
		m := newBase(t, 32, 2)
		before := slices.Clone(m.Weights.Data)
		cfg := loraConfig()
		cfg.Dropout = 0.1
		lm, err := Apply(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := model.NewTrainer(m, model.TrainConfig{Batch: 2, SeqLen: 16, Schedule: model.Schedule{Peak: 1e-2, Warmup: 1, Total: 5}, AdamW: model.DefaultAdamW(), ClipNorm: 1})
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 4096)
		for i := range data {
			data[i] = byte("func main() { fmt.Println(x) }\n"[i%31])
		}
		s, err := model.NewSampler(data, 16, 1)
		if err != nil {
			t.Fatal(err)
		}
		var first, last float64
		for i := 0; i < 5; i++ {
			st, err := tr.Step(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = st.Loss
			}
			last = st.Loss
		}
		if !(last < first) {
			t.Errorf("loss did not fall: %v → %v", first, last)
		}
		if !slices.Equal(m.Weights.Data, before) {
			t.Error("training the adapter changed base weights")
		}
		return lm, slices.Clone(lm.Active().Params.Data), tr
	}
	lm, params, tr := train()
	defer tr.Close()
	a := lm.Active()
	if len(tr.Replica.Grad) != a.NumParams() || len(tr.Opt.M) != a.NumParams() || len(tr.Opt.V) != a.NumParams() {
		t.Errorf("gradient %d, AdamW moments %d/%d elements; want the adapter's %d", len(tr.Replica.Grad), len(tr.Opt.M), len(tr.Opt.V), a.NumParams())
	}
	nonzeroB := false
	for _, mod := range a.Modules {
		for _, v := range a.B(mod).Data {
			nonzeroB = nonzeroB || v != 0
		}
	}
	if !nonzeroB {
		t.Error("B stayed zero: the adapter did not train")
	}
	for _, mod := range a.Modules {
		l := lm.layers[mod]
		if len(l.baseNodes) == 0 {
			t.Fatalf("%s: no base nodes recorded", mod)
		}
		for _, w := range l.baseNodes {
			n := w.Value()
			if n == nil {
				t.Fatalf("%s: the recorded base node was collected while its trainer is open", mod)
			}
			if n.Deriv() != nil {
				t.Errorf("%s: frozen base parameter %s has a derivative node", mod, n.Name())
			}
		}
	}
	_, again, tr2 := train()
	defer tr2.Close()
	if !slices.Equal(again, params) {
		t.Error("two identical seeded runs (dropout on) trained different adapters")
	}
}

func TestSaveLoad(t *testing.T) {
	const B, T = 1, 16
	dir := t.TempDir()
	m := newBase(t, 32, 2)
	cfg := loraConfig()
	cfg.Dropout = 0.1
	cfg.UseRSLoRA = true
	cfg.TargetModules = []string{"c_attn", "mlp.c_fc"}
	cfg.BaseModel = "galleon-test"
	lm, err := Apply(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	randomizeB(lm.Active(), 3, 0.05)
	if err := lm.Active().Save(dir); err != nil {
		t.Fatal(err)
	}
	ids := randIDs(B*T, 8)
	want := logits(t, m, ids, B, T)

	// The files are PEFT's: the config's fields and only adapter tensors.
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4.0, "lora_alpha": 8.0, "lora_dropout": 0.1,
		"bias": "none", "fan_in_fan_out": true, "use_rslora": true, "init_lora_weights": true, "base_model_name_or_path": "galleon-test", "modules_to_save": nil} {
		if js[k] != v {
			t.Errorf("adapter_config.json %s = %v, want %v", k, js[k], v)
		}
	}
	f, err := safetensors.ReadFile(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != 8 {
		t.Errorf("%d tensors in the file, want 8 (A and B for 4 modules)", len(f.Tensors))
	}
	for _, ten := range f.Tensors {
		if !strings.HasPrefix(ten.Name, "base_model.model.transformer.h.") || !(strings.HasSuffix(ten.Name, ".lora_A.weight") || strings.HasSuffix(ten.Name, ".lora_B.weight")) {
			t.Errorf("tensor %q is not named as PEFT names adapters", ten.Name)
		}
	}
	if ten, ok := f.Tensor("base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight"); !ok || !slices.Equal(ten.Shape, []int64{128, 4}) {
		t.Errorf("c_fc lora_B: %v %v, want shape [128 4] ([out, r])", ok, ten.Shape)
	}

	// Load into a fresh base: bit-identical adapter, same logits.
	m2 := newBase(t, 32, 2)
	lm2, err := Wrap(m2)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := lm2.LoadAdapter(dir, "loaded")
	if err != nil {
		t.Fatal(err)
	}
	a := lm.Active()
	if !slices.Equal(a2.Modules, a.Modules) || a2.Config.R != 4 || a2.Config.Alpha != 8 || !a2.Config.UseRSLoRA || a2.Config.Dropout != 0.1 || a2.Scale() != a.Scale() {
		t.Errorf("loaded config %+v (modules %v), saved %+v (modules %v)", a2.Config, a2.Modules, a.Config, a.Modules)
	}
	for _, mod := range a.Modules {
		if !slices.Equal(a2.A(mod).Data, a.A(mod).Data) || !slices.Equal(a2.B(mod).Data, a.B(mod).Data) {
			t.Errorf("%s: loaded matrices differ from the saved ones", mod)
		}
	}
	if got := logits(t, m2, ids, B, T); !slices.Equal(got, want) {
		t.Errorf("loaded adapter's logits differ by %g", maxDiff(got, want))
	}
}

func TestLoadRefusesMismatch(t *testing.T) {
	dir := t.TempDir()
	m := newBase(t, 32, 2)
	lm, err := Apply(m, loraConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := lm.Active().Save(dir); err != nil {
		t.Fatal(err)
	}
	load := func(m *model.Model, dir string) error {
		lm, err := Wrap(m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = lm.LoadAdapter(dir, DefaultAdapter)
		return err
	}
	// Another width: same module names, other shapes.
	if err := load(newBase(t, 64, 2), dir); !errors.Is(err, ErrAdapterFile) || !strings.Contains(err.Error(), "shape") {
		t.Errorf("loading into a wider model: %v, want a shape error wrapping ErrAdapterFile", err)
	}
	// Fewer layers: the file has tensors for modules the model does not have.
	if err := load(newBase(t, 32, 1), dir); !errors.Is(err, ErrAdapterFile) || !strings.Contains(err.Error(), `"transformer.h.1.attn.c_attn", which this model does not have`) {
		t.Errorf("loading into a shallower model: %v, want ErrAdapterFile naming the missing module", err)
	}

	corrupt := func(name string, edit func(dir string)) {
		t.Helper()
		d := t.TempDir()
		for _, f := range []string{ConfigFile, WeightsFile} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		edit(d)
		if err := load(newBase(t, 32, 2), d); err == nil {
			t.Errorf("%s: loaded", name)
		} else if !errors.Is(err, ErrAdapterFile) && !errors.Is(err, ErrConfig) && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v does not wrap ErrAdapterFile", name, err)
		}
	}
	editConfig := func(f func(map[string]any)) func(string) {
		return func(d string) {
			p := filepath.Join(d, ConfigFile)
			b, _ := os.ReadFile(p)
			var js map[string]any
			if err := json.Unmarshal(b, &js); err != nil {
				t.Fatal(err)
			}
			f(js)
			b, _ = json.Marshal(js)
			os.WriteFile(p, b, 0o644)
		}
	}
	corrupt("rank mismatch", editConfig(func(js map[string]any) { js["r"] = 8 }))
	corrupt("rank zero", editConfig(func(js map[string]any) { js["r"] = 0 }))
	corrupt("huge rank", editConfig(func(js map[string]any) { js["r"] = 1 << 40 }))
	corrupt("large rank, small file", editConfig(func(js map[string]any) { js["r"] = maxRank })) // nothing allocated from the claim
	corrupt("not lora", editConfig(func(js map[string]any) { js["peft_type"] = "IA3" }))
	corrupt("dora", editConfig(func(js map[string]any) { js["use_dora"] = true }))
	corrupt("bias", editConfig(func(js map[string]any) { js["bias"] = "all" }))
	corrupt("modules_to_save", editConfig(func(js map[string]any) { js["modules_to_save"] = []string{"lm_head"} }))
	corrupt("fewer targets", editConfig(func(js map[string]any) { js["target_modules"] = []string{"c_attn"} }))
	corrupt("config not JSON", func(d string) { os.WriteFile(filepath.Join(d, ConfigFile), []byte("{"), 0o644) })
	corrupt("config too large", func(d string) {
		os.WriteFile(filepath.Join(d, ConfigFile), []byte(`{"peft_type":"LORA","x":"`+strings.Repeat("a", maxConfigBytes)+`"}`), 0o644)
	})
	corrupt("missing weights", func(d string) { os.Remove(filepath.Join(d, WeightsFile)) })
	corrupt("truncated weights", func(d string) {
		p := filepath.Join(d, WeightsFile)
		b, _ := os.ReadFile(p)
		os.WriteFile(p, b[:len(b)-4], 0o644)
	})
	corrupt("garbage weights", func(d string) {
		p := filepath.Join(d, WeightsFile)
		b, _ := os.ReadFile(p)
		for i := range b {
			b[i] = 0xff
		}
		os.WriteFile(p, b, 0o644)
	})
	rewrite := func(f func([]safetensors.Tensor) []safetensors.Tensor) func(string) {
		return func(d string) {
			p := filepath.Join(d, WeightsFile)
			sf, err := safetensors.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := safetensors.WriteFile(p, f(sf.Tensors), sf.Metadata); err != nil {
				t.Fatal(err)
			}
		}
	}
	corrupt("F16 tensor", rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
		ts[0] = safetensors.Tensor{Name: ts[0].Name, DType: safetensors.F16, Shape: ts[0].Shape, Data: make([]byte, len(ts[0].Data)/2)}
		ts = append(ts, safetensors.U8Tensor("pad", []int64{int64(len(ts[0].Data))}, make([]byte, len(ts[0].Data))))
		return ts
	}))
	corrupt("transposed tensor", rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
		for i := range ts {
			if ts[i].Shape[0] != ts[i].Shape[1] {
				ts[i].Shape = []int64{ts[i].Shape[1], ts[i].Shape[0]}
				break
			}
		}
		return ts
	}))
	corrupt("renamed tensor", rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
		ts[0].Name = "base_model.model.transformer.wte.lora_A.weight"
		return ts
	}))
	corrupt("missing tensor", rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
		n := len(ts[0].Data) / 4
		ts[0] = safetensors.F32Tensor("extra", []int64{int64(n)}, make([]float32, n))
		return ts
	}))
}

// FuzzLoadAdapter feeds arbitrary adapter files to the loader, onto a
// GPT-2 base and a Llama-family base: it must return an error or a valid
// adapter, never panic or allocate from claims. Seeds: adapters galleon
// saves for both families, and PEFT's variants of a Llama one (".default"
// names, a regular-expression target string, layers_to_transform,
// rank_pattern, a BF16 tensor).
func FuzzLoadAdapter(f *testing.F) {
	saved := func(m *model.Model, cfg Config) (cfgJSON, weights []byte) {
		dir := f.TempDir()
		lm, err := Apply(m, cfg)
		if err != nil {
			f.Fatal(err)
		}
		if err := lm.Active().Save(dir); err != nil {
			f.Fatal(err)
		}
		cfgJSON, _ = os.ReadFile(filepath.Join(dir, ConfigFile))
		weights, _ = os.ReadFile(filepath.Join(dir, WeightsFile))
		return cfgJSON, weights
	}
	cfg, weights := saved(newBase(f, 32, 1), Config{R: 2, Alpha: 4, TargetModules: []string{"c_attn"}, Seed: 1})
	f.Add(cfg, weights)
	f.Add([]byte(`{"peft_type":"LORA","r":65536,"lora_alpha":1,"target_modules":"re:.*"}`), weights[:64])
	lcfg, lweights := saved(newModel(f, fuzzLlama()), Config{R: 2, Alpha: 4, TargetModules: []string{"q_proj", "v_proj"}, UseRSLoRA: true})
	f.Add(lcfg, lweights)
	f.Add([]byte(strings.ReplaceAll(string(lcfg), `"q_proj",`, ``)), []byte(strings.ReplaceAll(string(lweights), ".lora_A.", ".lora_A.default.")))
	f.Add([]byte(`{"peft_type":"LORA","task_type":"CAUSAL_LM","r":2,"lora_alpha":4,"target_modules":"model\\.layers\\.\\d+\\.self_attn\\.(q|v)_proj","fan_in_fan_out":true,"layers_to_transform":0,"layers_pattern":"layers","rank_pattern":{"v_proj":2},"alpha_pattern":{"q_proj":8}}`), lweights)
	bf := make([]byte, len(lweights))
	copy(bf, lweights)
	f.Add(lcfg, []byte(strings.Replace(string(bf), `"F32"`, `"BF16"`, 1)))
	f.Fuzz(func(t *testing.T, cfg, weights []byte) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, ConfigFile), cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, WeightsFile), weights, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, base := range []*model.Model{newBase(t, 32, 1), newModel(t, fuzzLlama())} {
			lm, err := Wrap(base)
			if err != nil {
				t.Fatal(err)
			}
			a, err := lm.LoadAdapter(d, "x")
			if err != nil {
				continue
			}
			for _, mod := range a.Modules {
				if a.A(mod) == nil || a.B(mod) == nil {
					t.Fatalf("loaded adapter lacks %s", mod)
				}
			}
		}
	})
}

// fuzzLlama is a one-block Llama-family model with GQA, small enough to
// build per fuzz input.
func fuzzLlama() model.Config {
	c := tinyLlama("llama")
	c.Layers = 1
	return c
}

// Adapter dropout draws at the graph's coordinates (step, global row): a
// batch split in two halves, each replica told its first row, gives the
// adapter the gradient of the whole batch, as data-parallel workers need.
func TestAdapterDropoutFollowsRows(t *testing.T) {
	m := newBase(t, 32, 1)
	cfg := loraConfig()
	cfg.Dropout = 0.3
	lm, err := Apply(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	randomizeB(lm.Active(), 4, 0.1)
	const T = 16
	in, tg := randIDs(4*T, 1), randIDs(4*T, 2)
	whole, err := m.NewReplica(4, T)
	if err != nil {
		t.Fatal(err)
	}
	defer whole.Close()
	half, err := m.NewReplica(2, T)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	whole.Dropout.Step, half.Dropout.Step = 5, 5
	if _, err := whole.ForwardBackward(in, tg, 1); err != nil {
		t.Fatal(err)
	}
	for _, row0 := range []int{0, 2} {
		half.Dropout.Row0 = uint64(row0 * T) // activation rows: one per token
		if _, err := half.ForwardBackward(in[row0*T:(row0+2)*T], tg[row0*T:(row0+2)*T], 0.5); err != nil {
			t.Fatal(err)
		}
	}
	var scale, worst float64
	for i := range whole.Grad {
		scale = math.Max(scale, math.Abs(float64(whole.Grad[i])))
		worst = math.Max(worst, math.Abs(float64(whole.Grad[i]-half.Grad[i])))
	}
	if scale == 0 || worst > 1e-5*scale {
		t.Fatalf("halves' adapter gradient differs from the whole batch's by %g (largest %g)", worst, scale)
	}
	// Another step draws other masks.
	whole.ZeroGrad()
	whole.Dropout.Step = 6
	before := append([]float32(nil), half.Grad...)
	if _, err := whole.ForwardBackward(in, tg, 1); err != nil {
		t.Fatal(err)
	}
	same := true
	for i := range before {
		if before[i] != whole.Grad[i] {
			same = false
		}
	}
	if same {
		t.Error("the adapter's masks did not change with the step")
	}
}
