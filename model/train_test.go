package model

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// syntheticText is a small Go-like corpus for tests that must not read GOROOT.
func syntheticText(n int) []byte {
	const src = "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfor i := 0; i < 10; i++ {\n\t\tfmt.Println(i)\n\t}\n}\n"
	b := make([]byte, n)
	for i := range b {
		b[i] = src[i%len(src)]
	}
	return b
}

func testTrainConfig() TrainConfig {
	return TrainConfig{Batch: 4, Schedule: Schedule{Peak: 3e-3, Warmup: 3, Total: 20, MinRatio: 0.1}, AdamW: DefaultAdamW(), ClipNorm: 1}
}

// trainRun trains a fresh test model for steps steps and returns the losses
// and the final weights.
func trainRun(t *testing.T, cfg TrainConfig, steps int, seed uint64) ([]float64, []float32) {
	t.Helper()
	m := testModel(t, nil)
	tr, err := NewTrainer(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s, err := NewSampler(syntheticText(20000), m.Config.SeqLen, seed)
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	if err := tr.Train(context.Background(), s, steps, func(st StepStats) { losses = append(losses, st.Loss) }); err != nil {
		t.Fatal(err)
	}
	if len(losses) != steps {
		t.Fatalf("Train reported %d of %d steps", len(losses), steps)
	}
	return losses, append([]float32(nil), m.Weights.Data...)
}

// Train stops between steps once its context is cancelled, with the error.
func TestTrainStopsOnCancel(t *testing.T) {
	m := testModel(t, nil)
	tr, err := NewTrainer(m, testTrainConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s, err := NewSampler(syntheticText(20000), m.Config.SeqLen, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := 0
	err = tr.Train(ctx, s, 10, func(StepStats) {
		if done++; done == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || done != 2 || tr.StepsDone() != 2 {
		t.Errorf("after cancelling at step 2: %d steps done, error %v", tr.StepsDone(), err)
	}
}

func TestTrainingIsDeterministicAndLearns(t *testing.T) {
	l1, w1 := trainRun(t, testTrainConfig(), 12, 1)
	l2, w2 := trainRun(t, testTrainConfig(), 12, 1)
	for i := range l1 {
		if l1[i] != l2[i] {
			t.Fatalf("step %d: losses %v and %v differ between identical runs", i+1, l1[i], l2[i])
		}
	}
	for i := range w1 {
		if w1[i] != w2[i] {
			t.Fatalf("weight %d differs between identical runs", i)
		}
	}
	if !(l1[len(l1)-1] < l1[0]-1) {
		t.Errorf("loss went from %v to %v in 12 steps on repetitive text", l1[0], l1[len(l1)-1])
	}
}

// Gradient accumulation over 4 micro-batches of 1 equals one batch of 4:
// the same averaged gradient (to float32 summation order) and the same
// losses over several steps. Weights are not compared element by element:
// AdamW's update is about lr·sign(g) where g is tiny, so rounding noise in
// near-zero gradients moves those weights by up to 2·lr either way.
func TestAccumulationEqualsBigBatch(t *testing.T) {
	m := testModel(t, nil)
	text := syntheticText(20000)
	T := m.Config.SeqLen
	s, _ := NewSampler(text, T, 2)
	in, tg := make([]int32, 4*T), make([]int32, 4*T)
	if err := s.NextBatch(in, tg); err != nil {
		t.Fatal(err)
	}
	big, _ := m.NewReplica(4, T)
	defer big.Close()
	one, _ := m.NewReplica(1, T)
	defer one.Close()
	if _, err := big.ForwardBackward(in, tg, 1); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 4; k++ {
		if _, err := one.ForwardBackward(in[k*T:(k+1)*T], tg[k*T:(k+1)*T], 0.25); err != nil {
			t.Fatal(err)
		}
	}
	var scale, worst float64
	for i := range big.Grad {
		scale = math.Max(scale, math.Abs(float64(big.Grad[i])))
		worst = math.Max(worst, math.Abs(float64(big.Grad[i]-one.Grad[i])))
	}
	if worst > 1e-5*scale {
		t.Errorf("accumulated gradient differs by %g (largest gradient %g)", worst, scale)
	}

	bigCfg := testTrainConfig()
	accCfg := bigCfg
	accCfg.Batch, accCfg.Accum = 1, 4
	lb, _ := trainRun(t, bigCfg, 4, 2)
	la, _ := trainRun(t, accCfg, 4, 2)
	for i := range lb {
		if math.Abs(lb[i]-la[i]) > 1e-5*math.Abs(lb[i]) {
			t.Errorf("step %d: loss %v with one batch, %v accumulated", i+1, lb[i], la[i])
		}
	}
}

// The whole model's gradient against central finite differences of the
// inference-path loss, on the coordinates with the largest gradients of a
// few tensors (float32 differences are only trustworthy where the gradient
// is large).
func TestModelGradientFiniteDifferences(t *testing.T) {
	m := testModel(t, func(c *Config) { c.SeqLen = 9; c.DModel = 16; c.Heads = 2; c.KVHeads = 2 })
	checkModelGradients(t, m, []string{"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
		"transformer.h.1.mlp.c_fc.bias", "transformer.h.1.ln_2.weight", "transformer.ln_f.bias", "transformer.h.0.attn.c_proj.weight"})
}

// The Llama family's gradients (RMSNorm, RoPE, the packed q|k|v, SwiGLU,
// biases, the untied head) against finite differences of the inference
// path's loss.
func TestLlamaGradientFiniteDifferences(t *testing.T) {
	m := testModel(t, func(c *Config) {
		*c = tinyLlama()
		c.SeqLen, c.AttnBias, c.MLPBias, c.SlidingWindow = 9, true, true, 5
	})
	b := "model.layers.1."
	checkModelGradients(t, m, []string{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
		b + "self_attn.q_proj.weight", b + "self_attn.k_proj.weight", b + "self_attn.k_proj.bias", "model.layers.0.self_attn.v_proj.weight",
		b + "self_attn.o_proj.weight", b + "post_attention_layernorm.weight", b + "mlp.gate_proj.weight", b + "mlp.up_proj.bias",
		b + "mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"})
}

// checkModelGradients compares the graph's gradient of each named
// parameter, at its largest element, with a central finite difference of
// the inference path's loss.
func checkModelGradients(t *testing.T, m *Model, names []string) {
	t.Helper()
	const B, T = 2, 9
	r := rand.New(rand.NewPCG(11, 12))
	in, tg := randIDs(r, B*T), randIDs(r, B*T)
	rep, err := m.NewReplica(B, T)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	if _, err := rep.ForwardBackward(in, tg, 1); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		p := m.Weights.Get(name)
		g := rep.Grad[p.Offset : p.Offset+p.Size()]
		idx := 0
		for i := range g {
			if math.Abs(float64(g[i])) > math.Abs(float64(g[idx])) {
				idx = i
			}
		}
		const h = 1e-2
		orig := p.Data[idx]
		p.Data[idx] = orig + h
		lp, err := m.Loss(in, tg, B, T)
		if err != nil {
			t.Fatal(err)
		}
		p.Data[idx] = orig - h
		lm, err := m.Loss(in, tg, B, T)
		if err != nil {
			t.Fatal(err)
		}
		p.Data[idx] = orig
		fd := (lp - lm) / (2 * h)
		if d := math.Abs(fd - float64(g[idx])); d > 0.03*math.Abs(fd)+2e-4 {
			t.Errorf("%s[%d]: gradient %v, finite difference %v", name, idx, g[idx], fd)
		}
	}
}

func TestNonFiniteLossStopsTheStep(t *testing.T) {
	m := testModel(t, nil)
	tr, err := NewTrainer(m, testTrainConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s, _ := NewSampler(syntheticText(5000), m.Config.SeqLen, 1)
	if _, err := tr.Step(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	m.Weights.Get("transformer.ln_f.weight").Data[3] = float32(math.NaN())
	before := append([]float32(nil), m.Weights.Data...)
	_, err = tr.Step(context.Background(), s)
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), "step 2") {
		t.Fatalf("NaN weight gave %v, want ErrNonFinite naming step 2", err)
	}
	for i, v := range m.Weights.Data {
		if v != before[i] && !(v != v && before[i] != before[i]) {
			t.Fatalf("weight %d changed by a failed step", i)
		}
	}
	if tr.StepsDone() != 1 {
		t.Errorf("failed step counted: %d steps done", tr.StepsDone())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.Step(ctx, s); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// N steps = K steps + save + load + N−K steps, bit for bit.
func TestResumeIsExact(t *testing.T) {
	const N, K = 8, 3
	cfg := testTrainConfig()
	cfg.Accum = 2
	withDropout := func(c *Config) { c.Dropout = 0.1 }
	text := syntheticText(30000)
	run := func(m *Model, tr *Trainer, s *Sampler, steps int) []float64 {
		var l []float64
		for i := 0; i < steps; i++ {
			st, err := tr.Step(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			l = append(l, st.Loss)
		}
		return l
	}
	m := testModel(t, withDropout)
	tr, _ := NewTrainer(m, cfg)
	s, _ := NewSampler(text, m.Config.SeqLen, 9)
	want := run(m, tr, s, N)

	m2 := testModel(t, withDropout)
	tr2, _ := NewTrainer(m2, cfg)
	s2, _ := NewSampler(text, m2.Config.SeqLen, 9)
	got := run(m2, tr2, s2, K)
	path := filepath.Join(t.TempDir(), "ckpt.safetensors")
	if err := tr2.Save(path, s2.State()); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	tr3, err := NewTrainer(ck.Model, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr3.Restore(ck); err != nil {
		t.Fatal(err)
	}
	s3, _ := NewSampler(text, ck.Model.Config.SeqLen, 0)
	if err := s3.SetState(ck.Data); err != nil {
		t.Fatal(err)
	}
	got = append(got, run(ck.Model, tr3, s3, N-K)...)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("step %d: resumed loss %v, uninterrupted %v", i+1, got[i], want[i])
		}
	}
	for i := range m.Weights.Data {
		if m.Weights.Data[i] != ck.Model.Weights.Data[i] {
			t.Fatalf("weight %d differs after resuming", i)
		}
	}
}

func TestDropoutIsAppliedInTrainingOnly(t *testing.T) {
	m := testModel(t, func(c *Config) { c.Dropout = 0.2 })
	const B, T = 2, 37
	r := rand.New(rand.NewPCG(3, 3))
	in, tg := randIDs(r, B*T), randIDs(r, B*T)
	rep, _ := m.NewReplica(B, T)
	defer rep.Close()
	l1, _ := rep.ForwardBackward(in, tg, 1)
	l1again, _ := rep.ForwardBackward(in, tg, 1)
	rep.Dropout.Step++
	l2, _ := rep.ForwardBackward(in, tg, 1)
	clean, _ := m.Loss(in, tg, B, T)
	if l1 != l1again {
		t.Errorf("same step, different losses %v %v", l1, l1again)
	}
	if l1 == l2 || float64(l1) == clean {
		t.Errorf("dropout inactive: step losses %v %v, inference loss %v", l1, l2, clean)
	}
	again, _ := m.Loss(in, tg, B, T)
	if again != clean {
		t.Error("the inference path is not deterministic")
	}
}

func TestCheckpointRoundTripAndHostileFiles(t *testing.T) {
	m := testModel(t, func(c *Config) { c.KVHeads = 2 })
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Config != m.Config {
		t.Fatalf("config %+v, want %+v", back.Config, m.Config)
	}
	for i := range m.Weights.Data {
		if m.Weights.Data[i] != back.Weights.Data[i] {
			t.Fatalf("weight %d changed in the round trip", i)
		}
	}
	good, _ := os.ReadFile(path)
	// Every truncation is an error, never a panic.
	for n := 0; n < len(good); n += 1 + n/50 {
		p := filepath.Join(dir, "cut")
		os.WriteFile(p, good[:n], 0o644)
		if _, err := Load(p); err == nil {
			t.Fatalf("file cut at %d of %d bytes loaded", n, len(good))
		}
	}
	// A file of another model's shape, or another format, is refused clearly.
	other := testModel(t, func(c *Config) { c.Layers = 1 })
	op := filepath.Join(dir, "other.safetensors")
	other.Save(op)
	ob, _ := os.ReadFile(op)
	// The config is a JSON string inside the JSON header: its quotes are escaped.
	swapped := strings.Replace(string(ob), `\"n_layer\":1`, `\"n_layer\":2`, 1)
	if swapped == string(ob) {
		t.Fatal("test did not find the layer count in the header")
	}
	os.WriteFile(op, []byte(swapped), 0o644)
	if _, err := Load(op); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("config claiming more layers than the tensors: %v", err)
	}
	bad := strings.Replace(string(good), `"format":"galleon"`, `"format":"gallion"`, 1)
	os.WriteFile(op, []byte(bad), 0o644)
	if _, err := Load(op); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("wrong format: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file loaded")
	}
}

func FuzzLoadCheckpoint(f *testing.F) {
	dir := f.TempDir()
	cfg := Config{Vocab: 256, DModel: 8, Layers: 1, Heads: 2, KVHeads: 2, SeqLen: 4, MLPRatio: 2, TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: AttentionFlash}
	m, err := New(cfg, 1)
	if err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(dir, "seed.safetensors")
	if err := m.Save(path); err != nil {
		f.Fatal(err)
	}
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte(strings.Replace(string(seed), `\"n_embd\":8`, `\"n_embd\":9`, 1)))
	// Crafted configs that once overflowed the size check or made the
	// loader build per-layer specs before it (see hostileConfigs).
	for name, cfg := range hostileConfigs {
		f.Add(checkpointWithConfig(f, dir, name, cfg, false))
		f.Add(checkpointWithConfig(f, dir, name, cfg, true))
	}
	// A training checkpoint, with optimizer state and schedule metadata.
	tr, err := NewTrainer(m, TrainConfig{Batch: 1, Schedule: Schedule{Peak: 1e-3, Warmup: 1, Total: 5, MinRatio: 0.1, Decay: DecayCosine}, AdamW: DefaultAdamW()})
	if err != nil {
		f.Fatal(err)
	}
	defer tr.Close()
	tpath := filepath.Join(dir, "train.safetensors")
	if err := tr.Save(tpath, []byte("state")); err != nil {
		f.Fatal(err)
	}
	tseed, _ := os.ReadFile(tpath)
	f.Add(tseed)
	f.Add([]byte(strings.Replace(string(tseed), `\"total_steps\":5`, `\"total_steps\":-5`, 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "f.safetensors")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Skip()
		}
		ck, err := LoadCheckpoint(p)
		if err != nil {
			return
		}
		if err := ck.Model.Config.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
	})
}

// checkGreedyIsArgmax checks that greedy decoding's first token is the
// argmax of the full forward's last row.
func checkGreedyIsArgmax(t *testing.T, m *Model, prompt, greedy []int32) {
	t.Helper()
	logits, err := m.Logits(prompt, 1, len(prompt))
	if err != nil {
		t.Fatal(err)
	}
	last := logits[len(logits)-m.Config.Vocab:]
	best := 0
	for i := range last {
		if last[i] > last[best] {
			best = i
		}
	}
	if int(greedy[0]) != best {
		t.Errorf("greedy token %d, argmax %d", greedy[0], best)
	}
}

func TestGenerate(t *testing.T) {
	m := testModel(t, nil)
	prompt := Encode("func main() {")
	ctx := context.Background()
	greedy, err := m.Generate(ctx, prompt, 50, SampleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(greedy) != 50 {
		t.Fatalf("%d tokens, want 50 (past the 37-token context)", len(greedy))
	}
	checkGreedyIsArgmax(t, m, prompt, greedy)
	a, _ := m.Generate(ctx, prompt, 20, SampleOptions{Temperature: 0.8, TopK: 40, TopP: 0.9, Seed: 4})
	b, _ := m.Generate(ctx, prompt, 20, SampleOptions{Temperature: 0.8, TopK: 40, TopP: 0.9, Seed: 4})
	c, _ := m.Generate(ctx, prompt, 20, SampleOptions{Temperature: 0.8, TopK: 40, TopP: 0.9, Seed: 5})
	if Decode(a) != Decode(b) {
		t.Error("same seed, different samples")
	}
	if Decode(a) == Decode(c) {
		t.Error("different seeds, same 20-token sample")
	}
	for _, bad := range []SampleOptions{{Temperature: -1}, {TopK: -2}, {TopP: 1.5}, {Temperature: math.NaN()}} {
		if _, err := m.Generate(ctx, prompt, 5, bad); err == nil {
			t.Errorf("options %+v accepted", bad)
		}
	}
	if _, err := m.Generate(ctx, nil, 5, SampleOptions{}); err == nil {
		t.Error("empty prompt accepted")
	}
}

func TestTopKOneIsGreedy(t *testing.T) {
	s := newSampler(4, SampleOptions{Temperature: 1, TopK: 1, Seed: 1})
	if got := s.pick([]float32{0.1, 3, -2, 2.9}); got != 1 {
		t.Errorf("top-1 picked %d", got)
	}
	p := newSampler(4, SampleOptions{Temperature: 1, TopP: 0.5, Seed: 1})
	for i := 0; i < 50; i++ {
		if got := p.pick([]float32{0, 5, 0, 0}); got != 1 {
			t.Fatalf("top-p 0.5 with one dominant token picked %d", got)
		}
	}
}
