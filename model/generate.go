package model

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// SampleOptions controls how Generate picks each token. They apply in
// Hugging Face's order: temperature, then top-k, then top-p on the
// distribution renormalized over the top-k survivors.
type SampleOptions struct {
	Temperature float64 // 0 picks the most likely token (greedy)
	TopK        int     // keep the K most likely tokens; 0 keeps all
	TopP        float64 // then keep the smallest set whose renormalized probability reaches P; 0 or 1 keeps all
	Seed        uint64  // seeds the sampling; the same seed gives the same tokens
}

func (o SampleOptions) validate() error {
	if !(o.Temperature >= 0) || math.IsInf(o.Temperature, 0) || o.TopK < 0 || !(o.TopP >= 0 && o.TopP <= 1) {
		return fmt.Errorf("model: sample options %+v: temperature must be ≥ 0, top-k ≥ 0, top-p in [0, 1]", o)
	}
	return nil
}

// Generate continues prompt by maxTokens tokens and returns the new tokens.
// It runs on the inference path with a KV cache. When the context reaches
// the model's SeqLen (its learned positions), the cache restarts from the
// last three quarters of the context, so generation can run past it.
func (m *Model) Generate(ctx context.Context, prompt []int32, maxTokens int, opts SampleOptions) ([]int32, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if len(prompt) == 0 || maxTokens < 0 {
		return nil, fmt.Errorf("model: generate: a prompt of %d tokens and %d new tokens", len(prompt), maxTokens)
	}
	inf, err := m.NewInference(1, m.Config.SeqLen)
	if err != nil {
		return nil, err
	}
	s := newSampler(m.Config.Vocab, opts)
	window := append([]int32(nil), prompt...)
	if len(window) > m.Config.SeqLen {
		window = window[len(window)-m.Config.SeqLen:]
	}
	logits, err := inf.Forward(window, len(window))
	if err != nil {
		return nil, err
	}
	// maxTokens only bounds the loop (ctx ends an unbounded one): the
	// slice grows with what is generated, so math.MaxInt allocates nothing.
	out := make([]int32, 0, min(maxTokens, m.Config.SeqLen))
	V := m.Config.Vocab
	for len(out) < maxTokens {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("model: generate: %w", err)
		}
		last := logits[len(logits)-V:]
		tok := s.pick(last)
		out = append(out, tok)
		window = append(window, tok)
		if len(out) == maxTokens {
			break
		}
		if inf.Len == inf.Cap {
			keep := window[len(window)-inf.Cap*3/4:]
			inf.Reset()
			logits, err = inf.Forward(keep, len(keep))
		} else {
			logits, err = inf.Forward(window[len(window)-1:], 1)
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// tokenSampler draws tokens from logits with temperature, top-k and top-p.
type tokenSampler struct {
	opts  SampleOptions
	rng   *rand.Rand
	order []int
	probs []float64
}

func newSampler(vocab int, opts SampleOptions) *tokenSampler {
	return &tokenSampler{opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, 0x5eed)), order: make([]int, vocab), probs: make([]float64, vocab)}
}

func (s *tokenSampler) pick(logits []float32) int32 {
	keep, greedy := s.candidates(logits)
	if greedy >= 0 {
		return int32(greedy)
	}
	var total float64
	for _, id := range s.order[:keep] {
		total += s.probs[id]
	}
	u := s.rng.Float64() * total
	for _, id := range s.order[:keep] {
		u -= s.probs[id]
		if u < 0 {
			return int32(id)
		}
	}
	return int32(s.order[keep-1])
}

// candidates filters the distribution of logits as Hugging Face's logits
// processors do, in their order: temperature, then top-k, then top-p on the
// distribution renormalized over the top-k survivors. It leaves the
// unnormalized probabilities in s.probs and the tokens most likely first in
// s.order, and returns how many of them survive (at least one). Greedy
// decoding (temperature 0 or top-k 1) returns the argmax as greedy instead;
// otherwise greedy is −1.
func (s *tokenSampler) candidates(logits []float32) (keep, greedy int) {
	best := 0
	for i, l := range logits {
		if l > logits[best] {
			best = i
		}
	}
	if s.opts.Temperature == 0 || s.opts.TopK == 1 {
		return 1, best
	}
	// Softmax at the temperature, in float64, shifted by the maximum.
	mx := float64(logits[best])
	for i, l := range logits {
		s.probs[i] = math.Exp((float64(l) - mx) / s.opts.Temperature)
		s.order[i] = i
	}
	// Most likely first; ties by id so the draw is deterministic.
	sort.Slice(s.order, func(a, b int) bool {
		pa, pb := s.probs[s.order[a]], s.probs[s.order[b]]
		return pa > pb || (pa == pb && s.order[a] < s.order[b])
	})
	keep = len(s.order)
	if s.opts.TopK > 0 && s.opts.TopK < keep {
		keep = s.opts.TopK
	}
	if p := s.opts.TopP; p > 0 && p < 1 {
		// Top-p on what top-k left, renormalized: keep the smallest prefix
		// whose probability reaches p (HF removes a token when the mass of
		// the more likely ones already reaches p; it keeps at least one).
		var kept float64
		for _, id := range s.order[:keep] {
			kept += s.probs[id]
		}
		var acc float64
		for i := 0; i < keep; i++ {
			acc += s.probs[s.order[i]] / kept
			if acc >= p {
				keep = i + 1
				break
			}
		}
	}
	return keep, -1
}
