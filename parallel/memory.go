package parallel

import (
	"fmt"
	"unsafe"
)

// Memory is a number of bytes of model state held by one rank.
type Memory struct {
	Params    int64 `json:"params"`    // float32 weights
	Grads     int64 `json:"grads"`     // float32 gradients
	Optimizer int64 `json:"optimizer"` // AdamW's two float32 moments
}

// Total returns the sum of the three parts.
func (m Memory) Total() int64 { return m.Params + m.Grads + m.Optimizer }

// ZeROMemory returns the model state a rank holds at a ZeRO stage (the ZeRO
// paper's accounting; TestMemoryFollowsZeRO checks it) for fp32 parameters, fp32 gradients and fp32 Adam moments, with psi
// parameters over ranks ranks (a rank's shard is ⌈psi/ranks⌉ elements):
//
//	stage 0 (DDP): 4Ψ + 4Ψ + 8Ψ = 16Ψ
//	stage 1:       4Ψ + 4Ψ + 8Ψ/N
//	stage 2:       4Ψ + 4Ψ/N + 8Ψ/N
//	stage 3:       4Ψ/N + 4Ψ/N + 8Ψ/N = 16Ψ/N
func ZeROMemory(stage, ranks, psi int) (Memory, error) {
	if stage < 0 || stage > 3 || ranks <= 0 || psi < 0 {
		return Memory{}, fmt.Errorf("parallel: memory of stage %d, %d ranks, %d parameters", stage, ranks, psi)
	}
	full, shard := int64(psi), int64((psi+ranks-1)/ranks)
	m := Memory{Params: 4 * full, Grads: 4 * full, Optimizer: 8 * full}
	if stage >= 1 {
		m.Optimizer = 8 * shard
	}
	if stage >= 2 {
		m.Grads = 4 * shard
	}
	if stage >= 3 {
		m.Params = 4 * shard
	}
	return m, nil
}

// MemoryReport is one rank's memory for model state.
type MemoryReport struct {
	Rank  int `json:"rank"`  // the reporting rank
	Ranks int `json:"ranks"` // ranks in the group (workers under New)
	Stage int `json:"stage"` // ZeRO stage; 1 under New, whose workers share weights and shard AdamW
	// Model is the ZeRO accounting of the stage (ZeROMemory with this
	// rank's actual shard): what the rank keeps between steps.
	Model Memory `json:"model"`
	// Allocated is what this rank's buffers hold between steps in this
	// implementation. At stage 3 the pages of the parameters outside this
	// rank's shard, and at stages 2 and 3 those of the gradient buffer, are
	// given back to the system after every step (on Linux; elsewhere they
	// stay allocated and are counted whole). Whole pages are given back,
	// so a shard's two end pages count whole. In-process workers (New)
	// share one weight buffer, counted here as 1/N per worker. Not counted:
	// the activations and the gradient tensors of the replica's graph,
	// which gorgonia keeps from one run to the next.
	Allocated Memory `json:"allocated"`
	// Transient is the extra memory a step needs at its peak beyond
	// Allocated: at stage 3, the other ranks' parameters that are gathered
	// at once (the embeddings and layer norms for the whole step, plus one
	// linear layer's weights at a time, each gathered when the forward or
	// backward pass reaches the layer and given back after it) and the
	// scratch of one layer's weight gradient, and at stages 2 and 3 the
	// other ranks' parts of the gradient buffer, filled by the backward
	// pass and given back once the gradients are reduce-scattered.
	Transient int64 `json:"transient"`
}

// Memory reports this rank's memory (under New: worker 0's, all workers
// being alike up to rounding of the shards).
func (t *Trainer) Memory() MemoryReport {
	psi := int64(t.model.Trainable().Len())
	rank := 0
	if !t.shared && len(t.workers) == 1 {
		rank = t.workers[0].rank
	}
	own := int64(t.shards[rank].len())
	stage := t.stage
	if t.shared {
		stage = 1 // optimizer sharded, gradients per worker, weights shared
	}
	rep := MemoryReport{Rank: rank, Ranks: t.ranks, Stage: stage}
	rep.Model = Memory{Params: 4 * psi, Grads: 4 * psi, Optimizer: 8 * psi}
	if stage >= 1 {
		rep.Model.Optimizer = 8 * own
	}
	if stage >= 2 {
		rep.Model.Grads = 4 * own
	}
	if stage >= 3 {
		rep.Model.Params = 4 * own
	}
	rep.Allocated = Memory{Params: 4 * psi, Grads: 4 * psi, Optimizer: 8 * own}
	if stage == 0 {
		rep.Allocated.Optimizer = 8 * psi
	}
	if t.shared {
		rep.Allocated.Params = 4 * psi / int64(t.ranks)
	}
	if t.release != nil {
		rep.Allocated.Params = t.release.resident()
		rep.Transient += t.paramsPeak() - rep.Allocated.Params
	}
	if t.scratch != nil {
		s := t.scratch.resident()
		rep.Allocated.Grads += s
		rep.Transient += 4*int64(len(t.scratch.data)) - s
	}
	if t.gradRelease != nil {
		rep.Allocated.Grads = t.gradRelease.resident()
		rep.Transient += 4*psi - rep.Allocated.Grads
	}
	return rep
}

// releaser holds a parameter set's storage in memory mapped from the system
// so that the pages outside one shard can be given back between steps.
type releaser struct {
	mem   []byte
	data  []float32
	owned span
	// drop is the page-aligned byte range of mem outside owned, in up to
	// two pieces.
	drop [2][2]int
	live bool // whether the dropped pages are currently populated
}

func floatsOf(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func (r *releaser) resident() int64 {
	n := int64(len(r.data)) * 4
	if r.live {
		return n
	}
	for _, d := range r.drop {
		n -= int64(d[1] - d[0])
	}
	return n
}

// paramsPeak returns the bytes of parameters a stage-3 rank holds at the
// peak of a step: all of them, or, when the linear layers gather their own
// weights, the rest of the parameters plus the biggest layer (its other
// ranks' part; the owned part is already counted).
func (t *Trainer) paramsPeak() int64 {
	psi := int64(t.model.Trainable().Len())
	if t.layers == nil {
		return 4 * psi
	}
	own := t.shards[t.workers[0].rank]
	foreign := func(s span) int64 {
		return int64(s.len() - max(0, min(s.hi, own.hi)-max(s.lo, own.lo)))
	}
	n := int64(own.len())
	for _, s := range t.rest {
		n += foreign(s)
	}
	var biggest int64
	for _, l := range t.layers {
		biggest = max(biggest, foreign(l.unit))
	}
	return 4 * (n + biggest)
}
