package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SampleOptions controls how Generate picks each token. They apply in
// Hugging Face's order: temperature, then top-k, then top-p on the
// distribution renormalized over the top-k survivors.
type SampleOptions struct {
	Temperature float64 // 0 picks the most likely token (greedy)
	TopK        int     // keep the K most likely tokens; 0 keeps all
	TopP        float64 // then keep the smallest set whose renormalized probability reaches P; 0 or 1 keeps all
	Seed        uint64  // seeds the sampling; the same seed gives the same tokens

	// Vocab, when positive, samples only ids below it: a tokenizer with
	// fewer tokens than the model's embedding rows (Qwen pads its
	// vocabulary) cannot decode the others.
	Vocab int
	// Stop lists tokens that end generation (a model's EOS ids): the
	// first one sampled is returned as the last token.
	Stop []int32
	// OnToken, when set, is called with each token as soon as it is
	// sampled, before the next one is computed, so callers can stream
	// the text. An error from it stops generation; Generate returns it
	// (wrapped) with the tokens so far, the failing one included.
	OnToken func(id int32) error
}

// ErrContextFull is returned (wrapped) by Inference.Generate when the
// cache reaches its capacity before generation ends.
var ErrContextFull = errors.New("context full")

func (o SampleOptions) validate() error {
	if !(o.Temperature >= 0) || math.IsInf(o.Temperature, 0) || o.TopK < 0 || !(o.TopP >= 0 && o.TopP <= 1) || o.Vocab < 0 {
		return fmt.Errorf("model: sample options (temperature %v, top-k %d, top-p %v, vocab %d): temperature must be ≥ 0, top-k ≥ 0, top-p in [0, 1], vocab ≥ 0", o.Temperature, o.TopK, o.TopP, o.Vocab)
	}
	return nil
}

// Generate continues prompt by maxTokens tokens and returns the new tokens
// (fewer when a stop token of opts ends it). It runs on the inference path
// with a KV cache sized for the prompt and the new tokens. When the
// context reaches the model's SeqLen (its learned positions), the cache
// restarts from the last three quarters of the context, so generation can
// run past it.
func (m *Model) Generate(ctx context.Context, prompt []int32, maxTokens int, opts SampleOptions) ([]int32, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if len(prompt) == 0 || maxTokens < 0 {
		return nil, fmt.Errorf("model: generate: a prompt of %d tokens and %d new tokens", len(prompt), maxTokens)
	}
	window := append([]int32(nil), prompt...)
	if len(window) > m.Config.SeqLen {
		window = window[len(window)-m.Config.SeqLen:]
	}
	// The last new token is never fed back, so len(window)+maxTokens−1
	// rows suffice; the cache never needs more than SeqLen.
	capacity := m.Config.SeqLen
	if maxTokens <= m.Config.SeqLen-len(window) {
		capacity = max(len(window), len(window)+maxTokens-1)
	}
	inf, err := m.NewInference(1, capacity)
	if err != nil {
		return nil, err
	}
	return inf.generate(ctx, window, maxTokens, opts, true)
}

// Generate appends prompt (at least one token) to the cached sequence of a
// one-sequence session and samples up to maxTokens tokens after it, as
// Model.Generate does, but within the session's cache: the tokens already
// cached stay the context, so a conversation's earlier turns are not
// computed again. Every returned token but the last has been appended to
// the cache (the last is sampled, not yet run); a follow-up call that
// continues the sequence passes it first. That holds for the tokens
// returned with an error too: when the cache fills before generation ends
// (an error wrapping ErrContextFull; Truncate makes room), when ctx ends,
// or when OnToken fails.
func (inf *Inference) Generate(ctx context.Context, prompt []int32, maxTokens int, opts SampleOptions) ([]int32, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if inf.B != 1 || len(prompt) == 0 || maxTokens < 0 {
		return nil, fmt.Errorf("model: generate: %d sequences, a prompt of %d tokens and %d new tokens (want one sequence and a prompt)", inf.B, len(prompt), maxTokens)
	}
	if inf.Len+len(prompt) > inf.Cap {
		return nil, fmt.Errorf("model: generate: %d cached + %d prompt tokens exceed the capacity %d: %w", inf.Len, len(prompt), inf.Cap, ErrContextFull)
	}
	return inf.generate(ctx, prompt, maxTokens, opts, false)
}

// Truncate keeps the first n cached tokens of every sequence and forgets
// the rest, so the next Forward continues after token n (a conversation
// whose re-rendered text differs from what was cached goes back to where
// they agree).
func (inf *Inference) Truncate(n int) error {
	if n < 0 || n > inf.Len {
		return fmt.Errorf("model: inference: truncate to %d of %d cached tokens", n, inf.Len)
	}
	inf.Len = n
	return nil
}

// forwardLast appends ids to a one-sequence session and returns the logits
// of the last one only: a long prompt then costs one row of logits, not
// len(ids)·Vocab floats (a 4,096-token prompt of a 49,152-token vocabulary
// would need 805 MB for them).
func (inf *Inference) forwardLast(ids []int32) ([]float32, error) {
	n := len(ids)
	h, err := inf.hidden(ids, n)
	if err != nil {
		return nil, err
	}
	C, V := inf.m.Config.DModel, inf.m.Config.Vocab
	logits := grow(&inf.logits, V)
	if err := inf.head(logits, h[(n-1)*C:n*C], 1); err != nil {
		return nil, err
	}
	return logits, nil
}

// generate runs prompt through the cache and samples up to maxTokens
// tokens. With slide set, prompt is the whole context (as Model.Generate
// sees it) and a full cache restarts from its last three quarters;
// otherwise a full cache ends generation with ErrContextFull.
func (inf *Inference) generate(ctx context.Context, prompt []int32, maxTokens int, opts SampleOptions, slide bool) ([]int32, error) {
	V := inf.m.Config.Vocab
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("model: generate: %w", err)
	}
	logits, err := inf.forwardLast(prompt)
	if err != nil {
		return nil, err
	}
	s := newSampler(V, opts)
	var window []int32
	if slide {
		window = prompt
	}
	// maxTokens only bounds the loop (ctx ends an unbounded one): the
	// slice grows with what is generated, so math.MaxInt allocates nothing.
	out := make([]int32, 0, min(maxTokens, inf.Cap))
	for len(out) < maxTokens {
		last := logits
		if opts.Vocab > 0 && opts.Vocab < V {
			last = last[:opts.Vocab]
		}
		tok := s.pick(last)
		out = append(out, tok)
		if opts.OnToken != nil {
			if err := opts.OnToken(tok); err != nil {
				return out, fmt.Errorf("model: generate: %w", err)
			}
		}
		if len(out) == maxTokens || slices.Contains(opts.Stop, tok) {
			break
		}
		// Checked before the token runs, so that, whatever ends
		// generation, the last returned token is not in the cache.
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("model: generate: %w", err)
		}
		switch {
		case inf.Len < inf.Cap:
			window = append(window, tok)
			logits, err = inf.forwardLast(window[len(window)-1:])
		case slide:
			window = append(window, tok)
			keep := window[len(window)-inf.Cap*3/4:]
			inf.Reset()
			logits, err = inf.forwardLast(keep)
		default:
			return out, fmt.Errorf("model: generate: %w after %d new tokens (capacity %d)", ErrContextFull, len(out), inf.Cap)
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
	order []int     // the surviving tokens, most likely first (by id without truncation)
	heap  []int     // top-p's heap over the whole vocabulary
	probs []float64 // unnormalized probabilities at the temperature
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

// better orders tokens most likely first, ties by id, so that draws are
// deterministic.
func (s *tokenSampler) better(a, b int) bool {
	pa, pb := s.probs[a], s.probs[b]
	return pa > pb || (pa == pb && a < b)
}

// candidates filters the distribution of logits as Hugging Face's logits
// processors do, in their order: temperature, then top-k, then top-p on the
// distribution renormalized over the top-k survivors. It leaves the
// unnormalized probabilities in s.probs and the survivors in s.order, most
// likely first (in id order when nothing is cut, where the order does not
// change the distribution), and returns how many survive (at least one).
// Greedy decoding (temperature 0 or top-k 1) returns the argmax as greedy
// instead; otherwise greedy is −1.
//
// The vocabulary is never sorted whole: top-k keeps a heap of its K best
// tokens, and top-p over the whole vocabulary pops a heap of it only until
// the nucleus is complete (BenchmarkSample: a sort of 32,000 tokens took
// 23 ms per token, as long as a forward pass of a 100M-parameter model).
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
	// Softmax at the temperature, in float64, shifted by the maximum
	// (computed for the top-k survivors only when top-k cuts).
	mx := float64(logits[best])
	prob := func(i int) float64 { return math.Exp((float64(logits[i]) - mx) / s.opts.Temperature) }
	V := len(logits)
	p := s.opts.TopP
	nucleus := p > 0 && p < 1
	var total float64
	switch {
	case s.opts.TopK > 0 && s.opts.TopK < V:
		// The K best logits (the most likely tokens: exp is monotonic)
		// in a heap whose root is the worst of them, ties by id.
		k := s.opts.TopK
		h := s.order[:0]
		worse := func(a, b int) bool { return logits[a] < logits[b] || (logits[a] == logits[b] && a > b) }
		for i := 0; i < V; i++ {
			switch {
			case len(h) < k:
				h = append(h, i)
				siftUp(h, len(h)-1, worse)
			case worse(h[0], i):
				h[0] = i
				siftDown(h, 0, worse)
			}
		}
		for _, id := range h {
			s.probs[id] = prob(id)
			total += s.probs[id]
		}
		slices.SortFunc(h, func(a, b int) int {
			if s.better(a, b) {
				return -1
			}
			return 1
		})
		keep = k
	case nucleus:
		// Pop the whole vocabulary's heap, most likely first, until the
		// nucleus reaches p below.
		for i := range logits {
			s.probs[i] = prob(i)
			total += s.probs[i]
		}
		if len(s.heap) != V {
			s.heap = make([]int, V)
		}
		for i := range s.heap {
			s.heap[i] = i
		}
		for i := V/2 - 1; i >= 0; i-- {
			siftDown(s.heap, i, s.better)
		}
		h := s.heap
		var acc float64
		for keep = 0; keep < V; {
			s.order[keep] = h[0]
			acc += s.probs[h[0]] / total
			keep++
			if acc >= p {
				return keep, -1
			}
			h[0] = h[len(h)-1]
			h = h[:len(h)-1]
			siftDown(h, 0, s.better)
		}
		return keep, -1
	default:
		for i := range logits {
			s.probs[i] = prob(i)
			s.order[i] = i
		}
		return V, -1
	}
	if nucleus {
		// Top-p on what top-k left, renormalized: keep the smallest prefix
		// whose probability reaches p (HF removes a token when the mass of
		// the more likely ones already reaches p; it keeps at least one).
		var acc float64
		for i := 0; i < keep; i++ {
			acc += s.probs[s.order[i]] / total
			if acc >= p {
				return i + 1, -1
			}
		}
	}
	return keep, -1
}

// siftUp and siftDown keep h a binary heap whose root is first by first.
func siftUp(h []int, i int, first func(a, b int) bool) {
	for i > 0 {
		parent := (i - 1) / 2
		if !first(h[i], h[parent]) {
			return
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

func siftDown(h []int, i int, first func(a, b int) bool) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && first(h[c+1], h[c]) {
			c++
		}
		if !first(h[c], h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}
