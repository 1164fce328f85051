//go:build unix

package tokenizer

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO in place of tokenizer.json or tokenizer_config.json returns an
// error instead of waiting for a writer.
func TestLoadFIFOReturns(t *testing.T) {
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		dir := t.TempDir()
		if name != "tokenizer.json" {
			if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := syscall.Mkfifo(filepath.Join(dir, name), 0o600); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
		done := make(chan error, 1)
		go func() { _, err := Load(dir); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("Load with a FIFO %s succeeded", name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Load with a FIFO %s did not return", name)
		}
	}
}
