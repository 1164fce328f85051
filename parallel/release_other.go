//go:build !linux

package parallel

import "github.com/galleon-ml/galleon/model"

// newReleaser keeps ps's storage where it is: outside Linux the other ranks'
// parameter pages are not given back (they are zeroed, so the accounting of
// what a step needs stays the same).
func newReleaser(ps *model.ParamSet, owned span) (*releaser, error) {
	return &releaser{data: ps.Data, owned: owned, live: true}, nil
}

// newMapping returns n zeroed float32s of ordinary Go memory: outside Linux
// nothing is given back, and resident reports all of it.
func newMapping(n int, owned span) (*releaser, error) {
	return &releaser{data: make([]float32, n), owned: owned, live: true}, nil
}

func (r *releaser) release() {
	clear(r.data[:r.owned.lo])
	clear(r.data[r.owned.hi:])
}

func (r *releaser) acquire() {}

func (r *releaser) close(ps *model.ParamSet) {}

func (r *releaser) unmap() { r.data = nil }

func (r *releaser) releaseRange(s span) {
	if lo, hi := s.lo, min(s.hi, r.owned.lo); lo < hi {
		clear(r.data[lo:hi])
	}
	if lo, hi := max(s.lo, r.owned.hi), s.hi; lo < hi {
		clear(r.data[lo:hi])
	}
}
