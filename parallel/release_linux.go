//go:build linux

package parallel

import (
	"fmt"
	"os"
	"syscall"

	"github.com/galleon-ml/galleon/model"
)

// newReleaser moves ps's storage into an anonymous memory mapping (copying
// the values and re-pointing ps.Data and every Param.Data at it) so that the
// pages outside owned can later be returned to the system with
// madvise(MADV_DONTNEED). It must run before any graph binds ps.
func newReleaser(ps *model.ParamSet, owned span) (*releaser, error) {
	r, err := newMapping(ps.Len(), owned)
	if err != nil {
		return nil, fmt.Errorf("parallel: parameters: %w", err)
	}
	if r.mem != nil {
		copy(r.data, ps.Data)
		rebind(ps, r.data)
	}
	return r, nil
}

// newMapping returns a releaser over n float32s of zeroed anonymous memory,
// none of it resident yet, whose pages outside owned can be given back.
func newMapping(n int, owned span) (*releaser, error) {
	if n == 0 {
		return &releaser{owned: owned, live: true}, nil
	}
	mem, err := syscall.Mmap(-1, 0, 4*n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("map %d bytes: %w", 4*n, err)
	}
	r := &releaser{mem: mem, data: floatsOf(mem), owned: owned, live: true}
	page := os.Getpagesize()
	lo := owned.lo * 4 / page * page                   // first page touching the shard
	hi := min((owned.hi*4+page-1)/page*page, len(mem)) // end of the last one
	if owned.len() == 0 {
		lo, hi = 0, 0
	}
	r.drop = [2][2]int{{0, lo}, {hi, len(mem)}}
	return r, nil
}

func rebind(ps *model.ParamSet, data []float32) {
	ps.Data = data
	for _, p := range ps.Params {
		p.Data = data[p.Offset : p.Offset+p.Size() : p.Offset+p.Size()]
	}
}

// release gives back the pages that hold only other ranks' parameters; they
// read as zeros until the next all-gather rewrites them.
func (r *releaser) release() {
	if r.mem == nil {
		return
	}
	for _, d := range r.drop {
		if d[0] < d[1] {
			// Advice only: on failure the pages simply stay resident.
			_ = syscall.Madvise(r.mem[d[0]:d[1]], syscall.MADV_DONTNEED)
		}
	}
	r.live = false
}

// acquire marks the pages as about to be rewritten by an all-gather.
func (r *releaser) acquire() { r.live = true }

// close copies the parameters back into ordinary Go memory, re-points the
// set at it and unmaps the mapping. No graph may use the set's old storage
// afterwards.
func (r *releaser) close(ps *model.ParamSet) {
	if r.mem == nil {
		return
	}
	data := make([]float32, len(r.data))
	copy(data, r.data)
	rebind(ps, data)
	r.unmap()
}

// unmap returns the mapping to the system; nothing may use r.data after.
func (r *releaser) unmap() {
	if r.mem == nil {
		return
	}
	_ = syscall.Munmap(r.mem)
	r.mem, r.data = nil, nil
}

// releaseRange gives back the pages lying wholly inside s that hold none of
// this rank's elements; they read as zeros until the next all-gather.
func (r *releaser) releaseRange(s span) {
	if r.mem == nil {
		return
	}
	page := os.Getpagesize()
	lo := (s.lo*4 + page - 1) / page * page // first page wholly inside s
	hi := s.hi * 4 / page * page            // end of the last one
	if s.hi*4 == len(r.mem) {
		hi = len(r.mem)
	}
	for _, d := range r.drop {
		a, b := max(lo, d[0]), min(hi, d[1])
		if a < b {
			_ = syscall.Madvise(r.mem[a:b], syscall.MADV_DONTNEED)
		}
	}
}
