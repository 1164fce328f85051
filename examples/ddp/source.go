package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

// source is what the runs train: a fresh model of the preset on the
// corpus's bytes, or (-model-dir) a Hugging Face model directory's weights
// on the corpus encoded by the directory's tokenizer.
type source struct {
	bytes  []byte  // the corpus, for byte-level preset models
	tokens []int32 // the corpus encoded by the tokenizer (-model-dir)
	dir    string  // -model-dir
}

// maxTokenizedBytes bounds the corpus text a -model-dir run encodes: a
// timed run of a few steps reads far fewer tokens.
const maxTokenizedBytes = 2 << 20

// newSource returns the source and the preset whose batch and sequence
// length the runs use; under -model-dir its Config is the directory's,
// its SeqLen capped at the preset's.
func newSource(ctx context.Context, o options, p model.Preset, corpus []byte) (model.Preset, *source, error) {
	if o.modelDir == "" {
		return p, &source{bytes: corpus}, nil
	}
	s := &source{dir: o.modelDir}
	cfg, err := model.ReadPretrainedConfig(o.modelDir)
	if err != nil {
		return p, nil, err
	}
	seqLen := min(p.Config.SeqLen, cfg.SeqLen)
	p.Name, p.Config = filepath.Base(o.modelDir), cfg
	p.Config.SeqLen = seqLen
	if _, err := os.Stat(filepath.Join(o.modelDir, "tokenizer.json")); err != nil {
		return p, nil, fmt.Errorf("-model-dir %s: the corpus is encoded with the directory's tokenizer.json: %w", o.modelDir, err)
	}
	tok, err := tokenizer.Load(o.modelDir)
	if err != nil {
		return p, nil, err
	}
	text := corpus[:min(len(corpus), maxTokenizedBytes)]
	var chunks []string
	for len(text) > 0 { // cut at line ends, so that no token straddles two chunks mid-line
		n := min(len(text), 64<<10)
		for n < len(text) && text[n-1] != '\n' {
			n++
		}
		chunks = append(chunks, string(text[:n]))
		text = text[n:]
	}
	ids, err := tok.EncodeBatch(ctx, chunks, false)
	if err != nil {
		return p, nil, err
	}
	for _, c := range ids {
		s.tokens = append(s.tokens, c...)
	}
	for _, id := range s.tokens {
		if id < 0 || int(id) >= cfg.Vocab {
			return p, nil, fmt.Errorf("-model-dir %s: the tokenizer gives id %d, outside the model's vocabulary of %d", o.modelDir, id, cfg.Vocab)
		}
	}
	if len(s.tokens) <= seqLen {
		return p, nil, fmt.Errorf("-model-dir %s: the corpus encodes to %d tokens, too few for sequences of %d", o.modelDir, len(s.tokens), seqLen)
	}
	return p, s, nil
}

// newModel returns the model a run trains: the preset's, initialized from
// seed, or the directory's weights (the same on every rank).
func (s *source) newModel(p model.Preset, seed uint64) (*model.Model, error) {
	if s.dir == "" {
		return model.New(p.Config, seed)
	}
	return model.LoadPretrained(s.dir)
}

// batcher returns the run's data: windows of T tokens drawn from seed, the
// same on every rank.
func (s *source) batcher(T int, seed uint64) (model.Batcher, error) {
	if s.tokens == nil {
		return model.NewSampler(s.bytes, T, seed)
	}
	return &tokenWindows{tokens: s.tokens, t: T, rng: rand.New(rand.NewPCG(seed, 0x6464702d746f6b))}, nil
}

// tokenWindows draws random windows of T+1 tokens: T inputs and the T
// targets that follow each.
type tokenWindows struct {
	tokens []int32
	t      int
	rng    *rand.Rand
}

// NextBatch fills inputs and targets with len(inputs)/T windows.
func (w *tokenWindows) NextBatch(inputs, targets []int32) error {
	if len(inputs) != len(targets) || len(inputs)%w.t != 0 {
		return errors.New("ddp: batch of the wrong size")
	}
	for i := 0; i < len(inputs); i += w.t {
		at := w.rng.IntN(len(w.tokens) - w.t)
		copy(inputs[i:i+w.t], w.tokens[at:at+w.t])
		copy(targets[i:i+w.t], w.tokens[at+1:at+w.t+1])
	}
	return nil
}
