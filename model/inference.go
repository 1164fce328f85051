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
// token costs one row of work. Buffers are allocated once; a forward pass
// allocates only the attention kernels' small per-call bookkeeping, nothing
// that grows with the context. An Inference is not safe for concurrent use.
type Inference struct {
	m      *Model
	B, Cap int
	Len    int // tokens already in the cache, per sequence

	kc, vc [][]float32 // per layer: [B, KVH, Cap, D]

	// Scratch for up to B·Cap rows, resliced per call; lse receives the
	// attention forward's log-sum-exp, which inference does not use.
	x, h, qkv, att, proj, mlp, mean, rstd, lse, logits []float32

	// Names resolved once, so a forward pass builds no strings.
	blocks []blockNames
}

// blockNames holds the module names of one transformer block.
type blockNames struct {
	ln1, ln2                    [2]string // weight and bias
	attn, attnProj, fc, mlpProj string
}

// lnNames returns the weight and bias names of a LayerNorm module.
func lnNames(module string) [2]string { return [2]string{module + ".weight", module + ".bias"} }

var lnfNames = lnNames(NameLNF)

// NewInference allocates an inference session for B sequences of up to
// capacity tokens (at most Config.SeqLen: positions are learned).
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
		m: m, B: B, Cap: capacity,
		x: make([]float32, rows*c.DModel), h: make([]float32, rows*c.DModel),
		qkv: make([]float32, rows*c.QKVWidth()), att: make([]float32, rows*c.DModel),
		proj: make([]float32, rows*c.DModel), mlp: make([]float32, rows*c.MLPRatio*c.DModel),
		mean: make([]float32, rows), rstd: make([]float32, rows), logits: make([]float32, rows*c.Vocab),
		lse: make([]float32, rows*c.Heads),
	}
	for i := 0; i < c.Layers; i++ {
		b := BlockName(i)
		inf.blocks = append(inf.blocks, blockNames{ln1: lnNames(b + ".ln_1"), ln2: lnNames(b + ".ln_2"),
			attn: b + ".attn.c_attn", attnProj: b + ".attn.c_proj", fc: b + ".mlp.c_fc", mlpProj: b + ".mlp.c_proj"})
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
	if n <= 0 || len(ids) != inf.B*n {
		return nil, fmt.Errorf("model: inference: %d ids for %d sequences of %d tokens", len(ids), inf.B, n)
	}
	if inf.Len+n > inf.Cap {
		return nil, fmt.Errorf("model: inference: %d cached + %d new tokens exceed the capacity %d", inf.Len, n, inf.Cap)
	}
	rows, C, D, L := inf.B*n, c.DModel, c.HeadDim(), inf.Len+n
	x, h, att, proj := inf.x[:rows*C], inf.h[:rows*C], inf.att[:rows*C], inf.proj[:rows*C]
	qkv, mlp := inf.qkv[:rows*c.QKVWidth()], inf.mlp[:rows*c.MLPRatio*C]
	mean, rstd := inf.mean[:rows], inf.rstd[:rows]
	w := func(name string) []float32 { return m.Weights.Get(name).Data }
	const wteName, wpeName = NameWTE + ".weight", NameWPE + ".weight"

	for b := 0; b < inf.B; b++ {
		if err := nn.EmbeddingForward(x[b*n*C:(b+1)*n*C], w(wteName), w(wpeName), ids[b*n:(b+1)*n], n, C, inf.Len); err != nil {
			return nil, fmt.Errorf("model: inference: %w", err)
		}
	}
	layerNorm := func(dst, src []float32, ln [2]string) error {
		return nn.LayerNormForward(dst, mean, rstd, src, w(ln[0]), w(ln[1]), C, c.LayerNormEps)
	}
	linear := func(y, x []float32, name string) error {
		l, err := m.Linear(name)
		if err != nil {
			return err
		}
		return l.Forward(y, x, rows)
	}
	attnOpts := attention.Options{Causal: true}
	for i, blk := range inf.blocks {
		if err := layerNorm(h, x, blk.ln1); err != nil {
			return nil, err
		}
		if err := linear(qkv, h, blk.attn); err != nil {
			return nil, err
		}
		q, k, v, err := attention.PackedQKV(qkv, inf.B, n, c.Heads, c.KVHeads, D)
		if err != nil {
			return nil, err
		}
		kc, err := inf.cacheView(inf.kc[i])
		if err != nil {
			return nil, err
		}
		vc, err := inf.cacheView(inf.vc[i])
		if err != nil {
			return nil, err
		}
		appendRows(kc, k, inf.Len)
		appendRows(vc, v, inf.Len)
		o, err := attention.PackedHeads(att, inf.B, n, c.Heads, D)
		if err != nil {
			return nil, err
		}
		if n <= decodeRows {
			err = attention.DecodeInto(o, q, kc, vc, L, attnOpts)
		} else {
			kc.T, vc.T = L, L
			err = attention.ForwardInto(o, inf.lse[:inf.B*c.Heads*n], q, kc, vc, attnOpts)
		}
		if err != nil {
			return nil, fmt.Errorf("model: inference: %w", err)
		}
		if err := linear(proj, att, blk.attnProj); err != nil {
			return nil, err
		}
		kernels.Axpy(1, proj, x)
		if err := layerNorm(h, x, blk.ln2); err != nil {
			return nil, err
		}
		if err := linear(mlp, h, blk.fc); err != nil {
			return nil, err
		}
		if err := nn.GELUForward(mlp, mlp); err != nil {
			return nil, err
		}
		if err := linear(proj, mlp, blk.mlpProj); err != nil {
			return nil, err
		}
		kernels.Axpy(1, proj, x)
	}
	if err := layerNorm(h, x, lnfNames); err != nil {
		return nil, err
	}
	logits := inf.logits[:rows*c.Vocab]
	var err error
	if c.TiedEmbeddings {
		err = nn.LinearForwardTransW(logits, h, w(wteName), nil, rows, C, c.Vocab)
	} else {
		err = linear(logits, h, NameHead)
	}
	if err != nil {
		return nil, err
	}
	inf.Len = L
	return logits, nil
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
