package report

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLibraryLeavesOutReportDeps checks that the library packages a user
// imports build without the plotting and progress-bar modules, which only
// this package, the commands and the examples use.
func TestLibraryLeavesOutReportDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	// `go test` puts its toolchain's GOROOT/bin first on PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command: %v", err)
	}
	args := []string{"list", "-deps"}
	for _, p := range []string{"attention", "data", "lora", "model", "parallel", "quant", "tokenizer"} {
		args = append(args, "github.com/galleon-ml/galleon/"+p)
	}
	out, err := exec.Command(goTool, args...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "gonum.org/v1/plot") || strings.Contains(dep, "progressbar") ||
			dep == "github.com/galleon-ml/galleon/internal/report" {
			t.Errorf("a library package depends on %s", dep)
		}
	}
}
