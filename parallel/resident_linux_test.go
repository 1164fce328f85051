//go:build linux

package parallel

import (
	"os"
	"syscall"
	"unsafe"
)

func pageSize() int { return os.Getpagesize() }

// residentBytes asks the kernel (mincore) how many bytes of r's mapping are
// resident, in whole pages; ok is false when r holds no mapping.
func residentBytes(r *releaser) (n int64, ok bool) {
	if len(r.mem) == 0 {
		return 0, false
	}
	page := pageSize()
	vec := make([]byte, (len(r.mem)+page-1)/page)
	_, _, errno := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&r.mem[0])), uintptr(len(r.mem)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return 0, false
	}
	for _, v := range vec {
		if v&1 != 0 {
			n += int64(page)
		}
	}
	return n, true
}
