package kernels

import (
	"fmt"
	"os"
	"slices"
	"sync"
)

// The dispatch registry, modelled on Go's crypto/internal/impl. Each kernel
// family (sgemm, i8gemm, vec, the attention tiles) has a portable Go base
// implementation and registers its alternatives here, each with the
// instruction-set Level it needs, whether this CPU and build can run it, and
// the package variable ("toggle") that enables it. The family's code picks
// the best enabled alternative by reading its toggles, so the hot paths cost
// one load and a branch. This registry and those toggles are the only
// mutable dispatch state of galleon.
//
// The level in force is the CPU's best (CPULevel), lowered by the
// environment variable GALLEON_KERNELS (generic, avx2 or avx512), which is
// read once when the program starts, and changed afterwards only by SetLevel
// and Select, which tests and benchmarks use to run every implementation.

// Level is an instruction-set level of the kernels.
type Level uint8

// The levels, in increasing order of the CPU features they need.
const (
	LevelGeneric Level = iota // portable Go
	LevelAVX2                 // amd64 AVX2 and FMA
	LevelAVX512               // amd64 AVX-512 F, BW, DQ and VL (on top of AVX2)
)

// EnvLevel is the environment variable that caps the level for the whole
// process: generic, avx2 or avx512. It is read once, at start-up.
const EnvLevel = "GALLEON_KERNELS"

var levelNames = [...]string{LevelGeneric: "generic", LevelAVX2: "avx2", LevelAVX512: "avx512"}

// String returns the level's name as GALLEON_KERNELS spells it.
func (l Level) String() string {
	if int(l) < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("Level(%d)", l)
}

// ParseLevel returns the level named s (generic, avx2 or avx512).
func ParseLevel(s string) (Level, error) {
	for l, name := range levelNames {
		if s == name {
			return Level(l), nil
		}
	}
	return 0, fmt.Errorf("kernels: unknown kernel level %q (want generic, avx2 or avx512)", s)
}

// CPULevel returns the highest level this CPU and build can run; builds with
// the purego tag and other architectures run LevelGeneric.
func CPULevel() Level { return cpuLevel }

// Impl describes one registered alternative implementation of a family.
type Impl struct {
	Family string // kernel family, e.g. "sgemm"
	Name   string // implementation, e.g. "avx2"
	Level  Level  // the level it needs
	// Available reports whether this CPU and build can run it; it is then
	// enabled whenever the level in force is at least Level.
	Available bool
	toggle    *bool
}

var (
	registryMu sync.Mutex
	registry   []Impl
	level      = startLevel()
)

// startLevel returns the CPU's level, capped by GALLEON_KERNELS. An unknown
// value stops the program at start-up: running another path than the one
// asked for (a CI job meant to test the generic code, say) would be worse.
func startLevel() Level {
	s, ok := os.LookupEnv(EnvLevel)
	if !ok || s == "" {
		return cpuLevel
	}
	l, err := ParseLevel(s)
	if err != nil {
		panic(fmt.Sprintf("%v in %s", err, EnvLevel))
	}
	return min(l, cpuLevel)
}

// Register records an alternative implementation of a kernel family. need
// is the level it requires, available whether this CPU and build can run it,
// and toggle the variable its family reads to use it: Register sets it for
// the level in force. Families register from init functions; name must be
// unique within the family and must not be "generic", the name of the base
// implementation every family has.
func Register(family, name string, need Level, available bool, toggle *bool) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if name == "generic" || name == "" {
		panic("kernels: Register: reserved implementation name " + name)
	}
	for _, im := range registry {
		if im.Family == family && im.Name == name {
			panic("kernels: Register: " + family + "/" + name + " registered twice")
		}
	}
	available = available && need <= cpuLevel
	*toggle = available && need <= level
	registry = append(registry, Impl{Family: family, Name: name, Level: need, Available: available, toggle: toggle})
}

// CurrentLevel returns the level in force.
func CurrentLevel() Level {
	registryMu.Lock()
	defer registryMu.Unlock()
	return level
}

// SetLevel sets the level in force for every family (capped at CPULevel),
// enabling exactly the available implementations that need at most that
// level, and returns a function that restores the previous state. It is for
// tests and benchmarks: it must not run while kernels run, and operands
// packed for one int8 kernel must be packed again after a change.
func SetLevel(l Level) (restore func()) {
	registryMu.Lock()
	defer registryMu.Unlock()
	saved := saveLocked()
	level = min(l, cpuLevel)
	for _, im := range registry {
		*im.toggle = im.Available && im.Level <= level
	}
	return restoreFunc(saved)
}

type savedState struct {
	level   Level
	toggles []bool
}

func saveLocked() savedState {
	s := savedState{level: level, toggles: make([]bool, len(registry))}
	for i, im := range registry {
		s.toggles[i] = *im.toggle
	}
	return s
}

func restoreFunc(s savedState) func() {
	return func() {
		registryMu.Lock()
		defer registryMu.Unlock()
		level = s.level
		for i, im := range registry {
			if i < len(s.toggles) {
				*im.toggle = s.toggles[i]
			}
		}
	}
}

// Families returns the kernel families with registered alternatives.
func Families() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	var fs []string
	for _, im := range registry {
		if !slices.Contains(fs, im.Family) {
			fs = append(fs, im.Family)
		}
	}
	return fs
}

// Implementations returns the names of the implementations of family that
// can run under the level in force, the base "generic" first, then the
// alternatives in the order they registered.
func Implementations(family string) []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	names := []string{"generic"}
	for _, im := range registry {
		if im.Family == family && im.Available && im.Level <= level {
			names = append(names, im.Name)
		}
	}
	return names
}

// Select enables only the named implementation of family ("generic": the
// base, with every alternative off), leaving other families alone, and
// returns a function that restores the previous state. It returns an error
// if the implementation does not exist or cannot run under the level in
// force. Like SetLevel it is for tests and benchmarks.
func Select(family, name string) (restore func(), err error) {
	registryMu.Lock()
	defer registryMu.Unlock()
	found := name == "generic"
	for _, im := range registry {
		if im.Family == family && im.Name == name && im.Available && im.Level <= level {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("kernels: implementation %s/%s not available at level %v", family, name, level)
	}
	saved := saveLocked()
	for _, im := range registry {
		if im.Family == family {
			*im.toggle = im.Name == name
		}
	}
	return restoreFunc(saved), nil
}

// ForEach runs f once for every implementation of family that can run under
// the level in force (see Implementations), with that implementation
// selected, and restores the selection afterwards. f returns false to stop.
// Tests and benchmarks use it (t.Run inside f); they must not run in
// parallel with anything using the family's kernels.
func ForEach(family string, f func(name string) bool) {
	for _, name := range Implementations(family) {
		restore, err := Select(family, name)
		if err != nil {
			panic(err) // Implementations listed it
		}
		ok := f(name)
		restore()
		if !ok {
			return
		}
	}
}

// Implementation names the implementations in force, family by family, e.g.
// "sgemm=avx2 vec=avx2": the best enabled alternative of each (the last
// registered one enabled), or generic.
func Implementation() string {
	registryMu.Lock()
	defer registryMu.Unlock()
	var s string
	var fams []string
	for _, im := range registry {
		if !slices.Contains(fams, im.Family) {
			fams = append(fams, im.Family)
		}
	}
	for _, f := range fams {
		name := "generic"
		for _, im := range registry {
			if im.Family == f && *im.toggle {
				name = im.Name
			}
		}
		if s != "" {
			s += " "
		}
		s += f + "=" + name
	}
	return s
}
