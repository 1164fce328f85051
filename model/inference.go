package model

import (
	"fmt"
	"math"

	"github.com/galleon-ml/galleon/attention"
	"github.com/galleon-ml/galleon/internal/kernels"
	"github.com/galleon-ml/galleon/internal/nn"
)

// Inference runs the model without a graph for B sequences of up to Cap
// tokens, keeping each layer's keys and values in a cache so that every new
// token costs one row of work. It interprets the family's block
// description (arch.go), as the training graph does. Buffers are allocated
// once; a forward pass allocates only the attention kernels' small per-call
// bookkeeping, nothing that grows with the context. An Inference is not
// safe for concurrent use.
type Inference struct {
	m      *Model
	B, Cap int
	Len    int // tokens already in the cache, per sequence

	kc, vc [][]float32 // per layer: [B, KVH, Cap, D]

	// One buffer per register of the description (nil for registers the
	// family does not use), the norms' statistics, the attention forward's
	// log-sum-exp (which inference does not use) and the logits: each grows
	// to the rows of the largest call so far and is resliced per call, so a
	// long context does not cost B·Cap rows of logits up front.
	regs                    [numRegs][]float32
	used                    [numRegs]bool
	mean, rstd, lse, logits []float32

	// Names resolved once, so a forward pass builds no strings.
	blocks []blockModules
	// Rotary families: the inverse frequencies, and each new row's
	// position (grown like the buffers above).
	invFreq   []float32
	positions []int32
}

// NewInference allocates an inference session for B sequences of up to
// capacity tokens (at most Config.SeqLen).
func (m *Model) NewInference(B, capacity int) (*Inference, error) {
	c := m.Config
	if B <= 0 || capacity <= 0 || capacity > c.SeqLen {
		return nil, fmt.Errorf("model: inference for %d sequences of %d tokens (capacity must be in 1…%d)", B, capacity, c.SeqLen)
	}
	if err := c.checkActivations(B, capacity, false); err != nil {
		return nil, fmt.Errorf("model: inference: %w", err)
	}
	D := c.HeadDim()
	inf := &Inference{m: m, B: B, Cap: capacity, blocks: c.modules()}
	if c.FamilyName() == FamilyLlama {
		var err error
		if inf.invFreq, err = c.ropeFreqs(); err != nil {
			return nil, err
		}
	}
	inf.used[rX], inf.used[rH] = true, true
	for _, s := range c.arch().steps {
		for _, r := range append(s.src[:], s.dst) {
			inf.used[r] = true
		}
	}
	for i := 0; i < c.Layers; i++ {
		inf.kc = append(inf.kc, make([]float32, B*c.KVHeads*capacity*D))
		inf.vc = append(inf.vc, make([]float32, B*c.KVHeads*capacity*D))
	}
	return inf, nil
}

// Reset empties the cache so the session can start new sequences.
func (inf *Inference) Reset() { inf.Len = 0 }

// decodeRows is the largest number of new rows per sequence that goes
// through attention.Decode (split over the cache length); longer prompts use
// the FlashAttention forward, parallel over query blocks.
const decodeRows = 16

// Forward appends n tokens to each sequence (ids holds B·n ids, sequence
// by sequence) and returns their logits, [B·n, Vocab]. The returned slice is
// reused by the next call.
func (inf *Inference) Forward(ids []int32, n int) ([]float32, error) {
	h, err := inf.hidden(ids, n)
	if err != nil {
		return nil, err
	}
	rows := inf.B * n
	logits := grow(&inf.logits, rows*inf.m.Config.Vocab)
	if err := inf.head(logits, h, rows); err != nil {
		return nil, err
	}
	return logits, nil
}

// head computes the logits of rows final hidden rows h.
func (inf *Inference) head(logits, h []float32, rows int) error {
	m, c := inf.m, inf.m.Config
	if c.TiedEmbeddings && m.tokensBF16 != nil {
		if len(logits) != rows*c.Vocab || len(h) != rows*c.DModel {
			return fmt.Errorf("model: head: %d logits and %d inputs for %d rows", len(logits), len(h), rows)
		}
		nn.LinearForwardBF16(logits, h, m.tokensBF16, nil, rows, c.DModel, c.Vocab, true)
		return nil
	}
	if c.TiedEmbeddings {
		return nn.LinearForwardTransW(logits, h, m.Weights.Get(c.TokenEmbeddingName()).Data, nil, rows, c.DModel, c.Vocab)
	}
	head, err := m.Linear(NameHead)
	if err != nil {
		return err
	}
	return head.Forward(logits, h, rows)
}

// hidden appends n tokens to each sequence, as Forward, and returns their
// final normalized hidden states, [B·n, DModel] (the head's input), reused
// by the next call.
func (inf *Inference) hidden(ids []int32, n int) ([]float32, error) {
	m, c := inf.m, inf.m.Config
	a := c.arch()
	if n <= 0 || len(ids) != inf.B*n {
		return nil, fmt.Errorf("model: inference: %d ids for %d sequences of %d tokens", len(ids), inf.B, n)
	}
	if inf.Len+n > inf.Cap {
		return nil, fmt.Errorf("model: inference: %d cached + %d new tokens exceed the capacity %d", inf.Len, n, inf.Cap)
	}
	rows, C := inf.B*n, c.DModel
	var regs [numRegs][]float32
	for r := range inf.regs {
		if inf.used[r] {
			regs[r] = grow(&inf.regs[r], rows*int(c.regWidth(reg(r))))
		}
	}
	grow(&inf.mean, rows)
	grow(&inf.rstd, rows)
	grow(&inf.lse, rows*c.Heads)
	if inf.invFreq != nil {
		if len(inf.positions) < rows {
			inf.positions = make([]int32, rows)
		}
		for r := 0; r < rows; r++ {
			inf.positions[r] = int32(inf.Len + r%n)
		}
	}
	x, h := regs[rX], regs[rH]
	w := func(name string) []float32 { return m.Weights.Get(name).Data }
	if err := inf.embed(x, a, ids, n); err != nil {
		return nil, err
	}
	norm := func(dst, src []float32, module string) error {
		switch a.norm {
		case layerNorm:
			return nn.LayerNormForward(dst, inf.mean[:rows], inf.rstd[:rows], src, w(module+".weight"), w(module+".bias"), C, c.LayerNormEps)
		}
		return nn.RMSNormForward(dst, nil, src, w(module+".weight"), C, c.LayerNormEps)
	}
	for i, mods := range inf.blocks {
		for j := range a.steps {
			s := &a.steps[j]
			dst, src := regs[s.dst], regs[s.src[0]]
			var err error
			switch s.op {
			case stepNorm:
				err = norm(dst, src, mods[j])
			case stepLinear:
				var l Linear
				if l, err = m.Linear(mods[j]); err == nil {
					err = l.Forward(dst, src, rows)
				}
			case stepAttention:
				err = inf.attend(dst, src, regs[s.src[1]], regs[s.src[2]], s.src[0] == rQKV, i, n)
			case stepGELU:
				err = nn.GELUForward(dst, src)
			case stepRoPE:
				pos := inf.positions[:rows]
				q, k := regs[s.src[0]], regs[s.src[1]]
				if err = nn.RopeForward(q, q, len(q)/rows, c.Heads, c.HeadDim(), pos, inf.invFreq); err == nil {
					err = nn.RopeForward(k, k, len(k)/rows, c.KVHeads, c.HeadDim(), pos, inf.invFreq)
				}
			case stepSwiGLU:
				err = nn.SwiGLUForward(dst, src, regs[s.src[1]])
			case stepResidual:
				kernels.Axpy(1, src, x)
			}
			if err != nil {
				return nil, fmt.Errorf("model: inference: %s step %d: %w", mods[0], j, err)
			}
		}
	}
	if err := norm(h, x, a.final); err != nil {
		return nil, err
	}
	inf.Len += n
	return h, nil
}

// lossChunk is the most logits (rows × Vocab) the evaluation loss holds at
// once: 16 MiB of float32, so B·T×V logits of a large vocabulary are never
// materialized.
const lossChunk = 1 << 22

// lossSum returns the summed cross-entropy of the head over hidden rows h
// against targets (IgnoreIndex rows left out) and the number of rows
// counted, computing the logits chunkRows rows at a time.
func (inf *Inference) lossSum(h []float32, targets []int32, chunkRows int) (sum float64, count int, err error) {
	V, C, rows := inf.m.Config.Vocab, inf.m.Config.DModel, len(targets)
	chunkRows = max(1, min(chunkRows, rows))
	buf := grow(&inf.logits, chunkRows*V)
	for r0 := 0; r0 < rows; r0 += chunkRows {
		r1 := min(rows, r0+chunkRows)
		lg := buf[:(r1-r0)*V]
		if err := inf.head(lg, h[r0*C:r1*C], r1-r0); err != nil {
			return 0, 0, err
		}
		l, n, err := nn.CrossEntropyForward(lg, lg, targets[r0:r1], V)
		if err != nil {
			return 0, 0, fmt.Errorf("model: loss: %w", err)
		}
		sum += float64(l) * float64(n)
		count += n
	}
	return sum, count, nil
}

// LossSum appends n tokens to each of the session's B sequences (inputs
// holds B·n ids, as for Forward) and returns the summed cross-entropy in
// nats of predicting targets (B·n ids; −1, nn.IgnoreIndex, left out) and
// the number of targets counted, with the head and loss fused by chunks
// of rows as in Model.Loss. An evaluation over many batches keeps one
// session and calls Reset before each batch, so that it allocates its
// cache and buffers once rather than per batch, as Model.Loss does.
func (inf *Inference) LossSum(inputs, targets []int32, n int) (sum float64, count int, err error) {
	return inf.lossSumChunks(inputs, targets, n, lossChunk/max(1, inf.m.Config.Vocab))
}

func (inf *Inference) lossSumChunks(inputs, targets []int32, n, chunkRows int) (float64, int, error) {
	if len(targets) != inf.B*n {
		return 0, 0, fmt.Errorf("model: loss: %d targets for %d sequences of %d tokens", len(targets), inf.B, n)
	}
	h, err := inf.hidden(inputs, n)
	if err != nil {
		return 0, 0, err
	}
	return inf.lossSum(h, targets, chunkRows)
}

// embed writes the n new tokens' embeddings of each sequence into x.
func (inf *Inference) embed(x []float32, a *arch, ids []int32, n int) error {
	c := inf.m.Config
	C := c.DModel
	if inf.m.tokensBF16 != nil { // only without learned positions (tokensBF16OK)
		if err := nn.TokenEmbeddingForwardBF16(x, inf.m.tokensBF16, ids, C); err != nil {
			return fmt.Errorf("model: inference: %w", err)
		}
		return nil
	}
	wte := inf.m.Weights.Get(a.tokens + ".weight").Data
	if a.positions == "" {
		if err := nn.TokenEmbeddingForward(x, wte, ids, C); err != nil {
			return fmt.Errorf("model: inference: %w", err)
		}
		return nil
	}
	wpe := inf.m.Weights.Get(a.positions + ".weight").Data
	for b := 0; b < inf.B; b++ {
		if err := nn.EmbeddingForward(x[b*n*C:(b+1)*n*C], wte, wpe, ids[b*n:(b+1)*n], n, C, inf.Len); err != nil {
			return fmt.Errorf("model: inference: %w", err)
		}
	}
	return nil
}

// attend appends layer's n new keys and values per sequence to its cache
// and writes the new rows' attention output into o. With packed set, q
// holds GPT-2's fused q|k|v rows and k and v are unused; otherwise q, k and
// v are separate [rows, heads·D] buffers.
func (inf *Inference) attend(o, q, k, v []float32, packed bool, layer, n int) error {
	c := inf.m.Config
	D := c.HeadDim()
	var qt, kt, vt attention.Tensor
	var err error
	if packed {
		qt, kt, vt, err = attention.PackedQKV(q, inf.B, n, c.Heads, c.KVHeads, D)
	} else if qt, err = attention.PackedHeads(q, inf.B, n, c.Heads, D); err == nil {
		if kt, err = attention.PackedHeads(k, inf.B, n, c.KVHeads, D); err == nil {
			vt, err = attention.PackedHeads(v, inf.B, n, c.KVHeads, D)
		}
	}
	if err != nil {
		return err
	}
	kc, err := inf.cacheView(inf.kc[layer])
	if err != nil {
		return err
	}
	vc, err := inf.cacheView(inf.vc[layer])
	if err != nil {
		return err
	}
	appendRows(kc, kt, inf.Len)
	appendRows(vc, vt, inf.Len)
	ot, err := attention.PackedHeads(o, inf.B, n, c.Heads, D)
	if err != nil {
		return err
	}
	L := inf.Len + n
	opts := attention.Options{Causal: true, Window: c.SlidingWindow}
	if n <= decodeRows {
		return attention.DecodeInto(ot, qt, kc, vc, L, opts)
	}
	kc.T, vc.T = L, L
	return attention.ForwardInto(ot, inf.lse[:inf.B*c.Heads*n], qt, kc, vc, opts)
}

// grow returns (*buf)[:n], reallocating *buf first when it is shorter.
func grow(buf *[]float32, n int) []float32 {
	if len(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

func (inf *Inference) cacheView(buf []float32) (attention.Tensor, error) {
	c := inf.m.Config
	return attention.Contiguous(buf, inf.B, c.KVHeads, inf.Cap, c.HeadDim())
}

// appendRows copies the n new key (or value) rows of src into the cache
// view dst at positions pos…pos+n−1.
func appendRows(dst, src attention.Tensor, pos int) {
	for b := 0; b < src.B; b++ {
		for h := 0; h < src.H; h++ {
			for t := 0; t < src.T; t++ {
				s := b*src.StrideB + h*src.StrideH + t*src.StrideT
				d := b*dst.StrideB + h*dst.StrideH + (pos+t)*dst.StrideT
				copy(dst.Data[d:d+src.D], src.Data[s:s+src.D])
			}
		}
	}
}

// Logits runs a full forward pass over B sequences of T tokens (ids holds
// B·T ids) without a graph and returns a new [B·T, Vocab] slice.
func (m *Model) Logits(ids []int32, B, T int) ([]float32, error) {
	inf, err := m.NewInference(B, T)
	if err != nil {
		return nil, err
	}
	logits, err := inf.Forward(ids, T)
	if err != nil {
		return nil, err
	}
	return append([]float32(nil), logits...), nil
}

// Loss returns the mean cross-entropy in nats of predicting targets from
// inputs (both B·T ids), computed on the inference path with the head and
// loss fused by chunks of rows (lossChunk), never all B·T×Vocab logits.
// A target of −1 (nn.IgnoreIndex) is left out of the mean; when every
// target is −1 there is no loss to report and Loss returns ErrNoTargets.
func (m *Model) Loss(inputs, targets []int32, B, T int) (float64, error) {
	return m.loss(inputs, targets, B, T, lossChunk/max(1, m.Config.Vocab))
}

// loss is Loss with the chunk's rows given.
func (m *Model) loss(inputs, targets []int32, B, T, chunkRows int) (float64, error) {
	if len(targets) != B*T {
		return 0, fmt.Errorf("model: loss: %d targets for %d sequences of %d tokens", len(targets), B, T)
	}
	inf, err := m.NewInference(B, T)
	if err != nil {
		return 0, err
	}
	sum, count, err := inf.lossSumChunks(inputs, targets, T, chunkRows)
	if err != nil {
		return 0, err
	}
	if count == 0 {
		return 0, fmt.Errorf("model: loss: all %d targets are the ignore index -1: %w", len(targets), ErrNoTargets)
	}
	loss := sum / float64(count)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, fmt.Errorf("model: loss is %v: %w", loss, ErrNonFinite)
	}
	return loss, nil
}

// Evaluate returns the mean loss in bits per byte over validation windows
// (inputs and targets of n·T ids, as from ValidationWindows), evaluated in
// batches of batch windows. A batch whose targets are all −1 is an error
// (ErrNoTargets), as in Loss.
func (m *Model) Evaluate(inputs, targets []int32, T, batch int) (float64, error) {
	if T <= 0 || batch <= 0 || len(inputs) != len(targets) || len(inputs)%T != 0 || len(inputs) == 0 {
		return 0, fmt.Errorf("model: evaluate: %d inputs, %d targets for windows of %d", len(inputs), len(targets), T)
	}
	n := len(inputs) / T
	var sum float64
	for i := 0; i < n; i += batch {
		b := min(batch, n-i)
		loss, err := m.Loss(inputs[i*T:(i+b)*T], targets[i*T:(i+b)*T], b, T)
		if err != nil {
			return 0, err
		}
		sum += loss * float64(b)
	}
	return BitsPerByte(sum / float64(n)), nil
}
