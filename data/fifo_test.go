//go:build unix

package data

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO in place of a data file returns an error instead of waiting for a
// writer.
func TestReadFileFIFOReturns(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo.jsonl")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFile(p, Options{}); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ReadFile of a FIFO succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadFile of a FIFO did not return")
	}
}
