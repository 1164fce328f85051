//go:build !linux

package parallel

func pageSize() int { return 4096 }

// residentBytes is not measured outside Linux.
func residentBytes(r *releaser) (int64, bool) { return 0, false }
