package model

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"testing"
)

// Top-p applies to what top-k leaves, renormalized, as in Hugging Face.
// Probabilities 0.4, 0.3, 0.2, 0.1: top-k 2 leaves 4/7 ≈ 0.571 and 3/7, so
// top-p 0.5 keeps one token (on the full distribution it would keep two);
// top-k 3 leaves 4/9, 3/9, 2/9, so top-p 0.75 keeps two (the cumulative
// 0.444, 0.778), where the full distribution's 0.4, 0.7, 0.9 would keep three.
func TestTopPAppliesAfterTopK(t *testing.T) {
	logits := []float32{float32(math.Log(0.2)), float32(math.Log(0.4)), float32(math.Log(0.1)), float32(math.Log(0.3))}
	for _, c := range []struct {
		topK int
		topP float64
		want []int32 // the tokens that survive, most likely first
	}{
		{2, 0.5, []int32{1}},
		{3, 0.75, []int32{1, 3}},
		{0, 0.75, []int32{1, 3, 0}}, // no top-k: top-p on the full distribution
		{3, 0, []int32{1, 3, 0}},    // no top-p
		{2, 0.58, []int32{1, 3}},    // 4/7 < 0.58: two
	} {
		s := newSampler(len(logits), SampleOptions{Temperature: 1, TopK: c.topK, TopP: c.topP, Seed: 1})
		keep, greedy := s.candidates(logits)
		got := make([]int32, keep)
		for i := range got {
			got[i] = int32(s.order[i])
		}
		if greedy != -1 || !slices.Equal(got, c.want) {
			t.Errorf("top-k %d, top-p %v: kept %v, want %v", c.topK, c.topP, got, c.want)
		}
		// Draws come from the survivors only, each of them.
		seen := map[int32]int{}
		for range 400 {
			seen[s.pick(logits)]++
		}
		if len(seen) != len(c.want) {
			t.Errorf("top-k %d, top-p %v: drew %v, want each of %v", c.topK, c.topP, seen, c.want)
		}
		for _, id := range c.want {
			if seen[id] == 0 {
				t.Errorf("top-k %d, top-p %v: never drew %d (%v)", c.topK, c.topP, id, seen)
			}
		}
	}
	// Temperature comes first: at T=0.5 the probabilities become
	// 16:9:4:1 (/30), so top-p 0.5 keeps only the first (0.533).
	s := newSampler(len(logits), SampleOptions{Temperature: 0.5, TopP: 0.5, Seed: 1})
	if keep, _ := s.candidates(logits); keep != 1 {
		t.Errorf("temperature 0.5 then top-p 0.5 kept %d tokens, want 1", keep)
	}
}

// Stop tokens end generation (the stop token returned last), OnToken sees
// every token as it is sampled, and an Inference session continues its
// cached sequence: generating a reply, then feeding the reply's last token
// and a new prompt, gives the tokens that generating from the whole
// sequence at once gives.
func TestGenerateStopStreamAndContinue(t *testing.T) {
	m := testModel(t, nil)
	ctx := context.Background()
	prompt := Encode("func ")
	full, err := m.Generate(ctx, prompt, 12, SampleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []int32
	stop := full[5]
	got, err := m.Generate(ctx, prompt, 12, SampleOptions{Stop: []int32{stop}, OnToken: func(id int32) error { seen = append(seen, id); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := full[:slices.Index(full, stop)+1]
	if !slices.Equal(got, want) || !slices.Equal(seen, want) {
		t.Fatalf("stop at %d: got %v, streamed %v, want %v", stop, got, seen, want)
	}
	boom := errors.New("boom")
	if out, err := m.Generate(ctx, prompt, 12, SampleOptions{OnToken: func(int32) error { return boom }}); !errors.Is(err, boom) || len(out) != 1 {
		t.Fatalf("OnToken error: %v, %d tokens", err, len(out))
	}

	inf, err := m.NewInference(1, 24)
	if err != nil {
		t.Fatal(err)
	}
	first, err := inf.Generate(ctx, prompt, 4, SampleOptions{})
	if err != nil || !slices.Equal(first, full[:4]) {
		t.Fatalf("first part %v (%v), want %v", first, err, full[:4])
	}
	if inf.Len != len(prompt)+3 {
		t.Fatalf("cache holds %d tokens, want the prompt and all but the last new token", inf.Len)
	}
	more := Encode("x := ")
	second, err := inf.Generate(ctx, append([]int32{first[3]}, more...), 3, SampleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	whole := append(append(append([]int32(nil), prompt...), first...), more...)
	ref, err := m.Generate(ctx, whole, 3, SampleOptions{})
	if err != nil || !slices.Equal(second, ref) {
		t.Fatalf("continued %v, from scratch %v (%v)", second, ref, err)
	}
	// Truncate goes back: the first part again from the same point.
	if err := inf.Truncate(len(prompt) - 1); err != nil {
		t.Fatal(err)
	}
	again, err := inf.Generate(ctx, prompt[len(prompt)-1:], 4, SampleOptions{})
	if err != nil || !slices.Equal(again, full[:4]) {
		t.Fatalf("after truncate %v (%v), want %v", again, err, full[:4])
	}
	if err := inf.Truncate(inf.Len + 1); err == nil {
		t.Error("truncating past the cache accepted")
	}
	// A full cache ends generation with ErrContextFull and the tokens so far.
	before := inf.Len
	out, err := inf.Generate(ctx, prompt, 100, SampleOptions{})
	if !errors.Is(err, ErrContextFull) || inf.Len != inf.Cap || len(out) != inf.Cap-before-len(prompt)+1 {
		t.Fatalf("full cache: %v, %d tokens, cache %d/%d", err, len(out), inf.Len, inf.Cap)
	}
	if _, err := inf.Generate(ctx, prompt, 1, SampleOptions{}); !errors.Is(err, ErrContextFull) {
		t.Fatalf("prompt past the capacity: %v", err)
	}
}

// candidates (heaps, no full sort) keeps the tokens a plain reference
// keeps: sort the whole distribution most likely first (ties by id), cut
// to top-k, then to the smallest prefix whose renormalized mass reaches
// top-p. Random logits with many ties (few distinct values) and odd sizes.
func TestCandidatesMatchSortReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 200; trial++ {
		V := 1 + rng.IntN(300)
		logits := make([]float32, V)
		levels := 1 + rng.IntN(20)
		for i := range logits {
			logits[i] = float32(rng.IntN(levels)) * 0.37
		}
		opts := SampleOptions{Temperature: 0.3 + rng.Float64()*2, TopK: rng.IntN(V + 3), TopP: []float64{0, 1, 0.1, 0.5, 0.9, 0.99}[rng.IntN(6)]}
		if opts.TopK == 1 {
			continue // greedy
		}
		s := newSampler(V, opts)
		keep, greedy := s.candidates(logits)
		// The reference.
		probs := make([]float64, V)
		order := make([]int, V)
		mx := slices.Max(logits)
		for i, l := range logits {
			probs[i] = math.Exp((float64(l) - float64(mx)) / opts.Temperature)
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return probs[order[a]] > probs[order[b]] })
		k := V
		if opts.TopK > 0 && opts.TopK < V {
			k = opts.TopK
		}
		if opts.TopP > 0 && opts.TopP < 1 {
			var kept, acc float64
			for _, id := range order[:k] {
				kept += probs[id]
			}
			for i := 0; i < k; i++ {
				acc += probs[order[i]] / kept
				if acc >= opts.TopP {
					k = i + 1
					break
				}
			}
		}
		want := slices.Clone(order[:k])
		got := slices.Clone(s.order[:keep])
		if k == V {
			slices.Sort(want) // uncut: any order draws the same distribution
			slices.Sort(got)
		}
		if greedy != -1 || !slices.Equal(got, want) {
			t.Fatalf("V %d, %+v: kept %v, want %v", V, opts, got, want)
		}
	}
}

// SampleOptions.Vocab keeps sampling below a tokenizer's size.
func TestGenerateVocabLimit(t *testing.T) {
	m := testModel(t, nil)
	for _, opts := range []SampleOptions{{Vocab: 40}, {Vocab: 40, Temperature: 5, Seed: 2}, {Vocab: 40, Temperature: 5, TopK: 10}, {Vocab: 40, Temperature: 5, TopP: 0.99}} {
		out, err := m.Generate(context.Background(), Encode("func "), 30, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range out {
			if id >= 40 {
				t.Fatalf("%+v: sampled %d", opts, id)
			}
		}
	}
	if _, err := m.Generate(context.Background(), Encode("a"), 1, SampleOptions{Vocab: -1}); err == nil {
		t.Fatal("negative vocab accepted")
	}
}

// Generation computes the logits of a prompt's last token only: a
// 200-token prompt at a 16,384-token vocabulary would need 13 MB for all
// of them.
func TestGeneratePromptLogitsLastRowOnly(t *testing.T) {
	cfg := Config{Family: FamilyLlama, ModelType: "llama", Vocab: 16384, DModel: 32, Layers: 1, Heads: 2, KVHeads: 1,
		SeqLen: 256, Intermediate: 48, LayerNormEps: 1e-5, RopeTheta: 1e4, Attention: AttentionFlash}
	m, err := New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	prompt := make([]int32, 200)
	for i := range prompt {
		prompt[i] = int32(i * 37 % cfg.Vocab)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out, err := m.Generate(context.Background(), prompt, 2, SampleOptions{})
	runtime.ReadMemStats(&after)
	if err != nil || len(out) != 2 {
		t.Fatal(err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 && !raceEnabled {
		t.Fatalf("generation allocated %d bytes", got)
	}
	// The same tokens as the argmax of full logits.
	logits, err := m.Logits(prompt, 1, len(prompt))
	if err != nil {
		t.Fatal(err)
	}
	last := logits[len(logits)-cfg.Vocab:]
	best := 0
	for i, v := range last {
		if v > last[best] {
			best = i
		}
	}
	if out[0] != int32(best) {
		t.Fatalf("first token %d, argmax %d", out[0], best)
	}
}
