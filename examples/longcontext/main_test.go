package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunJSON runs a tiny comparison and checks the table, the plot and the
// JSON object on the last line, with the naive kernels stopped by the cap.
func TestRunJSON(t *testing.T) {
	plot := filepath.Join(t.TempDir(), "lc.png")
	c := config{TMin: 64, TMax: 256, Batch: 1, Heads: 2, KVHeads: 1, Dim: 16, Causal: true, Reps: 1,
		MemCapMiB: 1, Plot: plot, JSON: true}
	var out, progress bytes.Buffer
	if err := run(c, &out, &progress); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not the JSON result: %v\n%s", err, out.String())
	}
	if len(res.Rows) != 3 {
		t.Fatalf("%d rows, want 3 (T = 64, 128, 256)", len(res.Rows))
	}
	for _, r := range res.Rows {
		if r.Flash == nil || r.Flash.FwdBwdMs <= 0 {
			t.Errorf("T=%d: no flash measurement", r.T)
		}
	}
	// 1 MiB holds the naive scores at T=64 and 128 (2·2·T² floats) but not
	// at 256.
	if res.Rows[0].Naive == nil || res.Rows[1].Naive == nil || res.Rows[2].Naive != nil {
		t.Errorf("naive measured at %v, %v, %v; want the cap to stop it at T=256", res.Rows[0].Naive != nil, res.Rows[1].Naive != nil, res.Rows[2].Naive != nil)
	}
	if st, err := os.Stat(plot); err != nil || st.Size() == 0 {
		t.Errorf("plot: %v", err)
	}
	if progress.Len() == 0 {
		t.Error("no progress output")
	}
}

func TestBadFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(config{TMin: 100, TMax: 50, Batch: 1, Heads: 1, KVHeads: 1, Dim: 8, Reps: 1}, &out, &out); err == nil {
		t.Error("tmax < tmin accepted")
	}
}

// The GPT run trains with both attention kernels when the cap allows and
// only with flash when it does not.
func TestModelRun(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the Go corpus")
	}
	c := config{TMin: 64, TMax: 64, Batch: 1, Heads: 1, KVHeads: 1, Dim: 8, Causal: true, Reps: 1,
		MemCapMiB: 64, JSON: true, ModelT: 96, ModelSteps: 1}
	var out, progress bytes.Buffer
	if err := run(c, &out, &progress); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Model) != 2 || res.Model[0].Impl != "flash" || res.Model[1].Impl != "naive" {
		t.Fatalf("model runs %+v, want flash and naive", res.Model)
	}
	for _, r := range res.Model {
		if r.MsPerStep <= 0 || r.Loss <= 0 || r.Loss != r.Loss {
			t.Errorf("%s: %+v", r.Impl, r)
		}
	}
	c.MemCapMiB = 0 // naive never fits
	out.Reset()
	if err := run(c, &out, &progress); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	json.Unmarshal([]byte(lines[len(lines)-1]), &res)
	if len(res.Model) != 1 || res.Model[0].Impl != "flash" {
		t.Errorf("with no memory: %+v", res.Model)
	}
	c.ModelSteps = 0
	if err := run(c, &out, &progress); err == nil {
		t.Error("-model-steps 0 accepted")
	}
}
