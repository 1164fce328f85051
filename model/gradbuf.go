package model

import "fmt"

// SetGradBuffer makes buf the replica's gradient buffer: Grad becomes buf
// (its current contents copied in) and ForwardBackward adds into it from
// then on. buf must have the trainable set's length. It lets a caller keep
// the gradients in memory it manages itself, such as a mapping whose pages
// outside one shard are given back to the system between steps.
func (r *Replica) SetGradBuffer(buf []float32) error {
	if len(buf) != len(r.Grad) {
		return fmt.Errorf("model: gradient buffer of %d elements, want %d", len(buf), len(r.Grad))
	}
	// Every slot is a view r.Grad[off:off+size] with the buffer's capacity
	// past it, so its offset is the difference of the capacities; check it
	// before moving anything.
	offs := make([]int, len(r.gradOf))
	for i, s := range r.gradOf {
		off := cap(r.Grad) - cap(s.dst)
		if len(s.dst) == 0 || off < 0 || off+len(s.dst) > len(r.Grad) || &r.Grad[off] != &s.dst[0] {
			return fmt.Errorf("model: gradient slot %d is not a view of the replica's buffer", i)
		}
		offs[i] = off
	}
	copy(buf, r.Grad)
	for i := range r.gradOf {
		s := &r.gradOf[i]
		s.dst = buf[offs[i] : offs[i]+len(s.dst)]
	}
	r.Grad = buf
	return nil
}
