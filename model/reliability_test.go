package model

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/stretchr/testify/require"
)

// A checkpoint padded to 4 GiB with truncate (sparse) is refused from its
// header: the loader allocates a small fraction of the claimed size.
func TestLoadRefusesSparsePaddedCheckpoint(t *testing.T) {
	m := testModel(t, nil)
	p := filepath.Join(t.TempDir(), "m.safetensors")
	require.NoError(t, m.Save(p))
	require.NoError(t, os.Truncate(p, 4<<30))
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	_, err := Load(p)
	runtime.ReadMemStats(&b)
	require.ErrorIs(t, err, ErrCheckpoint)
	require.ErrorIs(t, err, safetensors.ErrCorrupt)
	require.Less(t, b.TotalAlloc-a.TotalAlloc, uint64(64<<20))
}

// A FIFO in place of a checkpoint returns an error instead of waiting for
// a writer.
func TestLoadFIFOReturns(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := Load(p); done <- err }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, safetensors.ErrNotRegular)
	case <-time.After(10 * time.Second):
		t.Fatal("Load of a FIFO did not return")
	}
}

// Saving to a directory is an error before anything is written, and a
// leftover of a crashed save is replaced by the next save.
func TestSaveDirectoryAndLeftovers(t *testing.T) {
	m := testModel(t, nil)
	dir := t.TempDir()
	err := m.Save(dir)
	require.Error(t, err)
	require.Contains(t, err.Error(), "is a directory")
	ents, _ := os.ReadDir(filepath.Dir(dir))
	for _, e := range ents {
		require.NotContains(t, e.Name(), ".tmp")
	}
	p := filepath.Join(dir, "m.safetensors")
	require.NoError(t, os.WriteFile(safetensors.TempName(p), make([]byte, 1<<10), 0o600))
	require.NoError(t, m.Save(p))
	ents, err = os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	_, err = Load(p)
	require.NoError(t, err)
	_, err = Load(filepath.Join(dir, "missing"))
	require.True(t, errors.Is(err, os.ErrNotExist))
}
