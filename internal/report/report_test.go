package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

func TestPlotPNG(t *testing.T) {
	p := Plot{Title: "loss", XLabel: "step", YLabel: "bits/byte", Series: []Series{
		{Name: "train", X: []float64{1, 2, 3, 4}, Y: []float64{4, 3, 2.5, 2.2}},
		{Name: "validation", X: []float64{2, 4}, Y: []float64{3.1, 2.4}},
	}}
	path := filepath.Join(t.TempDir(), "loss.png")
	if err := p.SavePNG(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 300 || b.Dy() < 200 {
		t.Errorf("image is %v", b)
	}
	bad := Plot{Series: []Series{{Name: "x", X: []float64{1}, Y: nil}}}
	if _, err := bad.PNG(); err == nil {
		t.Error("mismatched series accepted")
	}
	logs := Plot{LogX: true, LogY: true, Series: []Series{{Name: "t", X: []float64{1024, 4096, 16384}, Y: []float64{1, 10, 100}}}}
	if _, err := logs.PNG(); err != nil {
		t.Errorf("log plot: %v", err)
	}
}

func TestWriteAtomicKeepsOldFileOnFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ckpt")
	if err := WriteFileAtomic(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	err := WriteAtomic(path, func(w io.Writer) error {
		_, _ = w.Write([]byte("partial"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("error %v does not wrap the writer's", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("file is %q after a failed write", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

// A crash mid-write leaves the one fixed temporary file of the path
// (safetensors.TempName); the next write replaces it instead of adding
// another, so leftovers never accumulate.
func TestWriteAtomicReplacesCrashLeftover(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "loss.png")
	if err := os.WriteFile(safetensors.TempName(path), []byte("a crashed write"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "loss.png" {
		t.Fatalf("directory after the write: %v, want only loss.png", entries)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Fatalf("file is %q", b)
	}
}

func TestPrintJSONIsOneLine(t *testing.T) {
	var buf bytes.Buffer
	if err := PrintJSON(&buf, map[string]any{"steps": 3, "val_bpb": 2.5}); err != nil {
		t.Fatal(err)
	}
	if s := buf.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "{") {
		t.Errorf("PrintJSON wrote %q", s)
	}
}

func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, "train")
	p.Update(0.5, "loss 2.1")
	p.Finish("done")
	if !strings.Contains(buf.String(), "done") {
		t.Errorf("bar output %q", buf.String())
	}
	q := NewProgress(nil, "silent")
	q.Update(2, "clamped")
	q.Finish("")
}

func TestMainRun(t *testing.T) {
	var out bytes.Buffer
	body := func(_ context.Context, stdout, _ io.Writer) (map[string]int, error) {
		fmt.Fprintln(stdout, "table")
		return map[string]int{"steps": 3}, nil
	}
	if err := run("x", true, &out, io.Discard, body); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "table\n{\"steps\":3}\n" {
		t.Errorf("output %q: want the table, then the JSON line", got)
	}
	out.Reset()
	if err := run("x", false, &out, io.Discard, body); err != nil || out.String() != "table\n" {
		t.Errorf("without -json: %q, %v", out.String(), err)
	}
	failing := func(context.Context, io.Writer, io.Writer) (int, error) { return 0, errors.New("boom") }
	if err := run("x", true, &out, io.Discard, failing); err == nil || err.Error() != "boom" {
		t.Errorf("error: %v", err)
	}
}

func TestProgressWithoutTerminalPrintsPlainLines(t *testing.T) {
	// A file, as when a run's output is redirected: lines, no redraws.
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p := NewProgress(f, "train"); p.bar != nil || IsTerminal(f) || IsTerminal(&bytes.Buffer{}) {
		t.Error("a bar on a file redraws with carriage returns")
	}
	// Updates every 500 ms for 21 s: a line every 5 s, and one at the end.
	var buf bytes.Buffer
	clock := time.Unix(0, 0)
	p := newPlainProgress(&buf, "train", func() time.Time { return clock })
	for i := 1; i <= 42; i++ {
		clock = clock.Add(500 * time.Millisecond)
		p.Update(float64(i)/42, fmt.Sprintf("loss %.1f", 5-float64(i)/10))
	}
	p.Finish("done, 123 tokens/s")
	out := buf.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if strings.Contains(out, "\r") || len(lines) != 5 {
		t.Fatalf("plain progress output %q: want 4 timed lines and a final one, no carriage returns", out)
	}
	if lines[0] != "train:  24% loss 4.0 [5s, about 16s left]" || lines[4] != "train: 100% done, 123 tokens/s [21s]" {
		t.Errorf("lines %q", lines)
	}
}

func TestEMA(t *testing.T) {
	e := EMA{Decay: 0.5}
	if e.Value() != 0 || e.Add(4) != 4 || e.Add(2) != 3 || e.Add(3) != 3 || e.Value() != 3 {
		t.Errorf("EMA sequence wrong: %v", e.Value())
	}
}

// ClearLine writes nothing where output is not a terminal: a log file gets
// no escape sequences.
func TestClearLineOffTerminal(t *testing.T) {
	var b bytes.Buffer
	ClearLine(&b)
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ClearLine(f)
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 0 || b.Len() != 0 {
		t.Fatalf("wrote %d bytes to a buffer and %d to a file", b.Len(), st.Size())
	}
}
