package model

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// smolLM2_360M is SmolLM2-360M's architecture (960 wide, 32 layers, 15
// query and 5 key/value heads, MLP 2,560, vocab 49,152, tied).
func smolLM2_360M() Config {
	return Config{Family: FamilyLlama, ModelType: "llama", Vocab: 49152, DModel: 960, Layers: 32, Heads: 15, KVHeads: 5,
		SeqLen: 8192, Intermediate: 2560, TiedEmbeddings: true, LayerNormEps: 1e-5, RopeTheta: 100000, Attention: AttentionFlash}
}

// TestLoadPretrainedPeakRSS writes a random SmolLM2-360M-shaped BF16
// checkpoint and loads it in a child process, whose peak RSS (VmHWM) must
// stay within 1.15× the float32 weights + 64 MiB. It needs ~3 GB of memory
// and a minute, so it runs only with GALLEON_HF_MEM=1:
//
//	GALLEON_HF_MEM=1 go test ./model -run TestLoadPretrainedPeakRSS -v
func TestLoadPretrainedPeakRSS(t *testing.T) {
	if dir := os.Getenv("GALLEON_HF_MEM_CHILD"); dir != "" {
		m, err := LoadPretrained(dir)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("PEAK %d %d\n", vmHWM(t), m.Weights.Len())
		return
	}
	if os.Getenv("GALLEON_HF_MEM") != "1" {
		t.Skip("set GALLEON_HF_MEM=1 to write a 700 MB checkpoint and measure its load")
	}
	dir := filepath.Join(t.TempDir(), "smollm2-360m")
	m, err := New(smolLM2_360M(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SavePretrained(dir, WithDType("bfloat16")); err != nil {
		t.Fatal(err)
	}
	m = nil
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadPretrainedPeakRSS$")
	cmd.Env = append(os.Environ(), "GALLEON_HF_MEM_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var peak, n int64
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "PEAK ") {
			fmt.Sscan(line[5:], &peak, &n)
		}
	}
	weights := 4 * n
	limit := weights*115/100 + 64<<20
	t.Logf("peak RSS %.1f MiB, float32 weights %.1f MiB (%.3f×), limit %.1f MiB", float64(peak)/(1<<20), float64(weights)/(1<<20), float64(peak)/float64(weights), float64(limit)/(1<<20))
	if peak == 0 || peak > limit {
		t.Fatalf("peak RSS %d bytes, limit %d", peak, limit)
	}
}

// vmHWM returns this process's peak resident set size in bytes.
func vmHWM(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
