package kernels

import "sync"

// The buffer pool: scratch memory of the kernels and their users (packed
// GEMM operands, attention tiles, dequantized int8 panels). A plain bounded
// free list rather than sync.Pool: the buffers reach megabytes, and
// sync.Pool drops its contents at every other collection, which in a
// training loop would mean allocating them again and again.

// bufPoolMax bounds the number of free buffers kept.
const bufPoolMax = 64

var bufPool struct {
	mu   sync.Mutex
	free []*[]float32
}

// GetFloats returns a buffer of n float32s from the pool; its contents are
// arbitrary. Give it back with PutFloats when done.
func GetFloats(n int) *[]float32 {
	bufPool.mu.Lock()
	best := -1
	for i, p := range bufPool.free {
		if c := cap(*p); c >= n && (best < 0 || c < cap(*bufPool.free[best])) {
			best = i
		}
	}
	var p *[]float32
	if best >= 0 {
		last := len(bufPool.free) - 1
		p = bufPool.free[best]
		bufPool.free[best] = bufPool.free[last]
		bufPool.free[last] = nil
		bufPool.free = bufPool.free[:last]
	}
	bufPool.mu.Unlock()
	if p == nil {
		s := make([]float32, n)
		return &s
	}
	*p = (*p)[:n]
	return p
}

// PutFloats returns a buffer from GetFloats to the pool. The caller must not
// use it afterwards. When the pool is full the smallest buffer is dropped.
func PutFloats(p *[]float32) {
	if p == nil || cap(*p) == 0 {
		return
	}
	bufPool.mu.Lock()
	defer bufPool.mu.Unlock()
	if len(bufPool.free) < bufPoolMax {
		bufPool.free = append(bufPool.free, p)
		return
	}
	small := 0
	for i, q := range bufPool.free {
		if cap(*q) < cap(*bufPool.free[small]) {
			small = i
		}
	}
	if cap(*p) > cap(*bufPool.free[small]) {
		bufPool.free[small] = p
	}
}

// FreeList is a bounded free list of reusable objects (call state, jobs): a
// plain list rather than sync.Pool, so that a steady loop allocates nothing
// even across collections and under the race detector, which makes
// sync.Pool drop objects at random. The zero value is ready to use.
type FreeList[T any] struct {
	mu    sync.Mutex
	items []*T
}

// freeListMax bounds the objects a FreeList keeps: enough for every core's
// concurrent callers; a burst beyond it is left to the collector.
const freeListMax = 64

// Get returns a free object, or a new zero one.
func (f *FreeList[T]) Get() *T {
	f.mu.Lock()
	if n := len(f.items); n > 0 {
		x := f.items[n-1]
		f.items[n-1] = nil
		f.items = f.items[:n-1]
		f.mu.Unlock()
		return x
	}
	f.mu.Unlock()
	return new(T)
}

// Put returns an object to the list; the caller must not use it afterwards.
func (f *FreeList[T]) Put(x *T) {
	f.mu.Lock()
	if len(f.items) < freeListMax {
		f.items = append(f.items, x)
	}
	f.mu.Unlock()
}
