//go:build unix

package safetensors

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A FIFO (or any non-regular file) is refused before it is opened, so the
// loader returns instead of waiting for a writer.
func TestOpenFIFOReturns(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFile(p); done <- err }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrNotRegular)
		require.ErrorIs(t, err, ErrInvalid)
	case <-time.After(10 * time.Second):
		t.Fatal("ReadFile of a FIFO did not return")
	}
	_, _, err := OpenRegular(filepath.Dir(p))
	require.ErrorIs(t, err, ErrNotRegular)
}
