package kernels

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// forEachImpl runs f once per implementation of family enabled at the level
// in force, as a subtest named after it. Tests using it must not run in
// parallel: they switch the family's implementation.
func forEachImpl(t *testing.T, family string, f func(t *testing.T)) {
	t.Helper()
	ForEach(family, func(name string) bool { t.Run(name, f); return true })
}

// forEachImplB is forEachImpl for benchmarks.
func forEachImplB(b *testing.B, family string, f func(b *testing.B)) {
	ForEach(family, func(name string) bool { return b.Run(name, f) })
}

func TestParseLevel(t *testing.T) {
	for l := LevelGeneric; l <= LevelAVX512; l++ {
		got, err := ParseLevel(l.String())
		if err != nil || got != l {
			t.Errorf("ParseLevel(%q) = %v, %v", l.String(), got, err)
		}
	}
	if _, err := ParseLevel("sse"); err == nil {
		t.Error("ParseLevel(\"sse\") succeeded")
	}
}

// TestSetLevel checks that a level enables exactly the implementations that
// need at most that level, and that restore brings back the previous state.
func TestSetLevel(t *testing.T) {
	before := Implementation()
	for l := LevelGeneric; l <= LevelAVX512; l++ {
		restore := SetLevel(l)
		if got := CurrentLevel(); got != min(l, CPULevel()) {
			t.Errorf("SetLevel(%v): CurrentLevel() = %v", l, got)
		}
		for _, f := range Families() {
			for _, name := range Implementations(f)[1:] {
				ok := false
				registryMu.Lock()
				for _, im := range registry {
					if im.Family == f && im.Name == name {
						ok = im.Level <= l && im.Available && *im.toggle
					}
				}
				registryMu.Unlock()
				if !ok {
					t.Errorf("level %v: %s/%s listed but not enabled", l, f, name)
				}
			}
		}
		if l == LevelGeneric {
			for _, f := range Families() {
				if got := Implementations(f); len(got) != 1 {
					t.Errorf("level generic: %s lists %v", f, got)
				}
			}
		}
		restore()
		if got := Implementation(); got != before {
			t.Fatalf("after restore: %q, want %q", got, before)
		}
	}
	restore := SetLevel(LevelGeneric)
	if sgemmAVX2 || sgemmAVX512 || vecAVX2 || i8W16 || i8VNNI || i8SignTrickAsm {
		t.Error("SetLevel(generic) left an assembly toggle on")
	}
	restore()
}

// TestSelect checks that selecting an implementation switches only its family.
func TestSelect(t *testing.T) {
	before := Implementation()
	for _, f := range Families() {
		for _, name := range Implementations(f) {
			restore, err := Select(f, name)
			if err != nil {
				t.Fatal(err)
			}
			want := f + "=" + name
			if got := Implementation(); !strings.Contains(" "+got+" ", " "+want+" ") {
				t.Errorf("Select(%s, %s): Implementation() = %q", f, name, got)
			}
			restore()
		}
	}
	if _, err := Select("sgemm", "nope"); err == nil {
		t.Error("Select of an unknown implementation succeeded")
	}
	if got := Implementation(); got != before {
		t.Fatalf("after restores: %q, want %q", got, before)
	}
}

// TestEnvLevel runs this test binary again with GALLEON_KERNELS set and
// checks the level it reports, and that an unknown value stops it.
func TestEnvLevel(t *testing.T) {
	if s := os.Getenv("GALLEON_KERNELS_REPORT"); s != "" {
		// The child: print the level in force.
		os.Stdout.WriteString("level=" + CurrentLevel().String() + "\n")
		return
	}
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, tc := range []struct{ env, want string }{
		{"generic", "level=generic"},
		{"avx2", "level=" + min(LevelAVX2, CPULevel()).String()},
		{"avx512", "level=" + CPULevel().String()},
		{"", "level=" + CPULevel().String()},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEnvLevel$")
		cmd.Env = append(os.Environ(), EnvLevel+"="+tc.env, "GALLEON_KERNELS_REPORT=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s=%q: %v\n%s", EnvLevel, tc.env, err, out)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnvLevel$")
	cmd.Env = append(os.Environ(), EnvLevel+"=sse", "GALLEON_KERNELS_REPORT=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown kernel level") {
		t.Errorf("%s=sse: %v\n%s", EnvLevel, err, out)
	}
}
