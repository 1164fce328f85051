package model

import (
	"math"
	"slices"
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
