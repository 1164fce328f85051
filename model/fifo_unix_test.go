//go:build unix

package model

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/stretchr/testify/require"
)

// A FIFO in place of a checkpoint returns an error instead of waiting for
// a writer.
func TestLoadFIFOReturns(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// A Hugging Face directory whose config.json is a FIFO.
	hf := t.TempDir()
	require.NoError(t, syscall.Mkfifo(filepath.Join(hf, "config.json"), 0o600))
	for name, load := range map[string]func() error{
		"Load":           func() error { _, err := Load(p); return err },
		"LoadPretrained": func() error { _, err := LoadPretrained(hf); return err },
	} {
		done := make(chan error, 1)
		go func() { done <- load() }()
		select {
		case err := <-done:
			require.ErrorIs(t, err, safetensors.ErrNotRegular, name)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s of a FIFO did not return", name)
		}
	}
}
