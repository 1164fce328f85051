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

	// One buffer per register of the description, for up to B·Cap rows,
	// resliced per call (nil for registers the family does not use).
	regs [numRegs][]float32
	// Scratch: the norms' statistics, the attention forward's log-sum-exp
	// (which inference does not use) and the logits.
	mean, rstd, lse, logits []float32

	// Names resolved once, so a forward pass builds no strings.
	blocks []blockModules
	rope   *ropeTable // rotary families: cos and sin of positions 0…Cap−1
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
	rows := B * capacity
	D := c.HeadDim()
	inf := &Inference{
		m: m, B: B, Cap: capacity, blocks: c.modules(),
		mean: make([]float32, rows), rstd: make([]float32, rows), logits: make([]float32, rows*c.Vocab),
		lse: make([]float32, rows*c.Heads),
	}
	if c.FamilyName() == FamilyLlama {
		inf.rope = newRopeTable(c, capacity)
	}
	inf.regs[rX] = make([]float32, rows*c.DModel)
	for _, s := range c.arch().steps {
		for _, r := range append(s.src[:], s.dst) {
			if inf.regs[r] == nil {
				inf.regs[r] = make([]float32, rows*int(c.regWidth(r)))
			}
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
	for r, buf := range inf.regs {
		if buf != nil {
			regs[r] = buf[:rows*int(c.regWidth(reg(r)))]
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
		rmsNormRows(dst, nil, src, w(module+".weight"), C, c.LayerNormEps)
		return nil
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
				q, k := regs[s.src[0]], regs[s.src[1]]
				inf.rope.rotate(q, len(q)/rows, c.Heads, n, inf.Len, false)
				inf.rope.rotate(k, len(k)/rows, c.KVHeads, n, inf.Len, false)
			case stepSwiGLU:
				swigluRows(dst, src, regs[s.src[1]])
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
	logits := inf.logits[:rows*c.Vocab]
	var err error
	if c.TiedEmbeddings {
		err = nn.LinearForwardTransW(logits, h, w(c.TokenEmbeddingName()), nil, rows, C, c.Vocab)
	} else {
		var head Linear
		if head, err = m.Linear(NameHead); err == nil {
			err = head.Forward(logits, h, rows)
		}
	}
	if err != nil {
		return nil, err
	}
	inf.Len += n
	return logits, nil
}

// embed writes the n new tokens' embeddings of each sequence into x.
func (inf *Inference) embed(x []float32, a *arch, ids []int32, n int) error {
	c := inf.m.Config
	C := c.DModel
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
// inputs (both B·T ids), computed on the inference path.
func (m *Model) Loss(inputs, targets []int32, B, T int) (float64, error) {
	logits, err := m.Logits(inputs, B, T)
	if err != nil {
		return 0, err
	}
	loss, _, err := nn.CrossEntropyForward(logits, logits, targets, m.Config.Vocab)
	if err != nil {
		return 0, fmt.Errorf("model: loss: %w", err)
	}
	if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
		return 0, fmt.Errorf("model: loss is %v: %w", loss, ErrNonFinite)
	}
	return float64(loss), nil
}

// Evaluate returns the mean loss in bits per byte over validation windows
// (inputs and targets of n·T ids, as from ValidationWindows), evaluated in
// batches of batch windows.
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
