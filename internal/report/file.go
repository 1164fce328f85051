package report

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

// WriteFileAtomic writes data to path so that a reader sees either the old
// file or the whole new one, even if the process dies mid-write.
func WriteFileAtomic(path string, data []byte) error {
	return WriteAtomic(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteAtomic is WriteFileAtomic for content produced by write. It is
// safetensors.WriteAtomic, the writer of every checkpoint: one fixed
// temporary name per path (safetensors.TempName), so that a crash leaves at
// most that file, which the next save replaces; file and directory synced.
func WriteAtomic(path string, write func(w io.Writer) error) error {
	if err := safetensors.WriteAtomic(path, write); err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	return nil
}

// PrintJSON writes v as one line of JSON: the last line of an example's
// output under -json.
func PrintJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
