package lora

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/galleon-ml/galleon/model"
)

// ErrConfig is wrapped by every error about an invalid adapter configuration.
var ErrConfig = errors.New("lora: invalid config")

// ErrAdapterFile is wrapped by every error about the content of adapter files.
var ErrAdapterFile = errors.New("lora: bad adapter file")

// AllLinear is the TargetModules entry that selects every linear layer of
// the model except the output head (as PEFT's "all-linear").
const AllLinear = "all-linear"

// Init names how adapter matrices start. In both cases B is zero, so a new
// adapter leaves the model's outputs unchanged.
type Init string

const (
	// InitKaiming draws A from U(−1/√in, 1/√in), PyTorch's kaiming_uniform
	// with a = √5 as PEFT uses (init_lora_weights = true).
	InitKaiming Init = "kaiming"
	// InitGaussian draws A from N(0, 1/r²) (PEFT's "gaussian").
	InitGaussian Init = "gaussian"
)

// Config describes one LoRA adapter: ΔW = (alpha/r)·B·A of rank r on each
// targeted linear layer (alpha/√r with UseRSLoRA). Module names are the
// model's (Hugging Face's): "model.layers.0.self_attn.q_proj" in the Llama
// family, "transformer.h.0.attn.c_attn" in GPT-2.
type Config struct {
	R       int     // rank; must be positive
	Alpha   float64 // lora_alpha; must be positive
	Dropout float64 // dropout on the adapter input during training, in [0, 1)

	// TargetModules selects the adapted linear layers, as PEFT's list of
	// target_modules does. Each entry is an exact module name
	// ("model.layers.0.self_attn.q_proj"), a name suffix matched at a dot
	// ("q_proj", "mlp.c_proj"), a regular expression prefixed with "re:"
	// that must match the whole name (PEFT's string form), or AllLinear.
	// Every entry must match at least one layer.
	TargetModules []string
	// ExcludeModules removes layers from the selection, with the same
	// matching rules (AllLinear is not allowed here).
	ExcludeModules []string
	// LayersToTransform, when not empty, keeps only the layers of these
	// blocks among those that suffix entries and AllLinear select (PEFT's
	// layers_to_transform; exact names and "re:" patterns are not
	// filtered, as in PEFT). The block index is the number after the first
	// "<segment>." of the name, or after one of LayersPattern's segments
	// ("layers", "h") when that is given.
	LayersToTransform []int
	LayersPattern     []string // PEFT's layers_pattern: regular expressions for the segment before the block index

	// RankPattern and AlphaPattern override R and Alpha for some modules
	// (PEFT's rank_pattern and alpha_pattern). For each module the first
	// entry whose Pattern, a regular expression, matches the whole name or
	// the part after one of its dots gives the value; in PEFT's JSON the
	// entries are in the order of the file.
	RankPattern []RankOverride
	// AlphaPattern: see RankPattern.
	AlphaPattern []AlphaOverride

	UseRSLoRA bool   // scale alpha/√r instead of alpha/r
	Init      Init   // "" means InitKaiming
	Seed      uint64 // seed of the initialization and of the dropout masks

	// BaseModel is written as base_model_name_or_path in adapter_config.json.
	BaseModel string
}

// RankOverride gives the rank R to the modules Pattern matches.
type RankOverride struct {
	Pattern string
	R       int
}

// AlphaOverride gives lora_alpha Alpha to the modules Pattern matches.
type AlphaOverride struct {
	Pattern string
	Alpha   float64
}

// Scale returns the factor applied to B·A: Alpha/R, or Alpha/√R with rsLoRA.
func (c Config) Scale() float64 { return scaleOf(c.Alpha, c.R, c.UseRSLoRA) }

func scaleOf(alpha float64, r int, rs bool) float64 {
	if rs {
		return alpha / math.Sqrt(float64(r))
	}
	return alpha / float64(r)
}

// patternRegexp compiles a rank_pattern/alpha_pattern key as PEFT matches
// it: the key must match the whole module name or the part after a dot.
func patternRegexp(key string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:.*\.)?(?:` + key + `)$`)
	if err != nil || key == "" {
		return nil, fmt.Errorf("lora: rank/alpha pattern %q is not a usable regular expression: %w", key, ErrConfig)
	}
	return re, nil
}

// ModuleRank returns the rank of the module called name: that of the first
// RankPattern entry matching it, or R.
func (c Config) ModuleRank(name string) int {
	for _, o := range c.RankPattern {
		if re, err := patternRegexp(o.Pattern); err == nil && re.MatchString(name) {
			return o.R
		}
	}
	return c.R
}

// ModuleAlpha returns the lora_alpha of the module called name: that of the
// first AlphaPattern entry matching it, or Alpha.
func (c Config) ModuleAlpha(name string) float64 {
	for _, o := range c.AlphaPattern {
		if re, err := patternRegexp(o.Pattern); err == nil && re.MatchString(name) {
			return o.Alpha
		}
	}
	return c.Alpha
}

// ModuleScale returns the factor applied to B·A in the module called name,
// from its own rank and alpha.
func (c Config) ModuleScale(name string) float64 {
	return scaleOf(c.ModuleAlpha(name), c.ModuleRank(name), c.UseRSLoRA)
}

// checkScale refuses a rank and alpha whose scale is not a finite nonzero
// float32.
func checkScale(alpha float64, r int, rs bool) error {
	s := scaleOf(alpha, r, rs)
	if math.IsInf(float64(float32(s)), 0) || float32(s) == 0 {
		// The scale multiplies float32 activations: lora_alpha 1e308 is
		// finite but its scale is +Inf there.
		return fmt.Errorf("lora: lora_alpha = %v, r = %d: scale %v is not a finite nonzero float32: %w", alpha, r, s, ErrConfig)
	}
	return nil
}

// Validate checks the configuration on its own (without a model).
func (c Config) Validate() error {
	switch {
	case c.R <= 0:
		return fmt.Errorf("lora: rank r = %d, want r > 0: %w", c.R, ErrConfig)
	case c.R > maxRank:
		return fmt.Errorf("lora: rank r = %d exceeds %d: %w", c.R, maxRank, ErrConfig)
	case !(c.Alpha > 0) || math.IsInf(c.Alpha, 0):
		return fmt.Errorf("lora: lora_alpha = %v, want a positive number: %w", c.Alpha, ErrConfig)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return fmt.Errorf("lora: dropout = %v, want 0 ≤ p < 1: %w", c.Dropout, ErrConfig)
	case c.Init != "" && c.Init != InitKaiming && c.Init != InitGaussian:
		return fmt.Errorf("lora: init %q, want %q or %q: %w", c.Init, InitKaiming, InitGaussian, ErrConfig)
	case len(c.TargetModules) == 0:
		return fmt.Errorf("lora: no target modules (give names, suffixes, \"re:\" patterns or %q): %w", AllLinear, ErrConfig)
	}
	if err := checkScale(c.Alpha, c.R, c.UseRSLoRA); err != nil {
		return err
	}
	for _, o := range c.RankPattern {
		if _, err := patternRegexp(o.Pattern); err != nil {
			return err
		}
		if o.R <= 0 || o.R > maxRank {
			return fmt.Errorf("lora: rank_pattern %q: r = %d, want 0 < r ≤ %d: %w", o.Pattern, o.R, maxRank, ErrConfig)
		}
	}
	for _, o := range c.AlphaPattern {
		if _, err := patternRegexp(o.Pattern); err != nil {
			return err
		}
		if !(o.Alpha > 0) || math.IsInf(o.Alpha, 0) {
			return fmt.Errorf("lora: alpha_pattern %q: lora_alpha = %v, want a positive number: %w", o.Pattern, o.Alpha, ErrConfig)
		}
	}
	for _, t := range c.TargetModules {
		if _, err := newMatcher(t); err != nil {
			return err
		}
	}
	for _, l := range c.LayersToTransform {
		if l < 0 {
			return fmt.Errorf("lora: layers_to_transform has %d, want block indices ≥ 0: %w", l, ErrConfig)
		}
	}
	if _, err := c.layerFilter(); err != nil {
		return err
	}
	for _, t := range c.ExcludeModules {
		if t == AllLinear {
			return fmt.Errorf("lora: %q cannot be excluded: %w", AllLinear, ErrConfig)
		}
		if _, err := newMatcher(t); err != nil {
			return err
		}
	}
	return nil
}

// maxRank bounds r so that a hostile config cannot ask for huge tensors.
const maxRank = 1 << 16

// match kinds of a target entry.
const (
	noMatch     = iota
	exactMatch  // the entry is the module's name (or a "re:" pattern): no layer filter
	suffixMatch // the entry is a suffix of the name at a dot (or AllLinear): layer filter applies
)

type matcher func(name string) int

func newMatcher(t string) (matcher, error) {
	switch {
	case t == "":
		return nil, fmt.Errorf("lora: empty target module: %w", ErrConfig)
	case t == AllLinear:
		return func(name string) int {
			if name == model.NameHead {
				return noMatch
			}
			return suffixMatch
		}, nil
	case strings.HasPrefix(t, "re:"):
		re, err := regexp.Compile("^(?:" + t[3:] + ")$")
		if err != nil {
			return nil, fmt.Errorf("lora: target pattern %q: %v: %w", t, err, ErrConfig)
		}
		return func(name string) int {
			if re.MatchString(name) {
				return exactMatch
			}
			return noMatch
		}, nil
	}
	return func(name string) int {
		switch {
		case name == t:
			return exactMatch
		case strings.HasSuffix(name, "."+t):
			return suffixMatch
		}
		return noMatch
	}, nil
}

// layerFilter returns the function that says whether a module passes
// LayersToTransform (always true when it is empty). As PEFT, the block
// index is the first number that follows ".<segment>." and is followed by
// a dot, with segment any name or one of LayersPattern; a module without
// one does not pass.
func (c Config) layerFilter() (func(name string) bool, error) {
	if len(c.LayersToTransform) == 0 {
		return func(string) bool { return true }, nil
	}
	patterns := c.LayersPattern
	if len(patterns) == 0 {
		patterns = []string{`[^.]*`}
	}
	var res []*regexp.Regexp
	for _, p := range patterns {
		re, err := regexp.Compile(`^(?:.*?\.` + p + `\.(\d+)\.)`)
		if err != nil || p == "" {
			return nil, fmt.Errorf("lora: layers_pattern %q is not a usable regular expression: %w", p, ErrConfig)
		}
		res = append(res, re)
	}
	return func(name string) bool {
		for _, re := range res {
			m := re.FindStringSubmatch(name)
			if m == nil {
				continue
			}
			i, err := strconv.Atoi(m[1])
			return err == nil && slices.Contains(c.LayersToTransform, i)
		}
		return false
	}, nil
}

// Resolve returns the linear layers of m that the configuration adapts, in
// the model's order. A target that matches no layer is an error naming the
// model's layers.
func (c Config) Resolve(m *model.Model) ([]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c.resolve(m.LinearNames(), true)
}

// resolve selects among available. strict refuses a target entry that
// matches nothing (a typo in a galleon configuration); a file written by
// PEFT only needs its entries to match something together, as PEFT loads
// it.
func (c Config) resolve(available []string, strict bool) ([]string, error) {
	inLayers, err := c.layerFilter()
	if err != nil {
		return nil, err
	}
	selected := map[string]bool{}
	for _, t := range c.TargetModules {
		match, err := newMatcher(t)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, name := range available {
			switch match(name) {
			case exactMatch:
			case suffixMatch:
				if !inLayers(name) {
					continue
				}
			default:
				continue
			}
			selected[name] = true
			n++
		}
		if n == 0 && strict {
			return nil, fmt.Errorf("lora: target module %q matches none of the model's linear layers %v%s: %w", t, available, c.layersNote(), ErrConfig)
		}
	}
	if len(selected) == 0 {
		return nil, fmt.Errorf("lora: target modules %q match none of the model's linear layers %v%s: %w", c.TargetModules, available, c.layersNote(), ErrConfig)
	}
	for _, t := range c.ExcludeModules {
		match, err := newMatcher(t)
		if err != nil {
			return nil, err
		}
		for name := range selected {
			if match(name) != noMatch {
				delete(selected, name)
			}
		}
	}
	var out []string
	for _, name := range available {
		if selected[name] {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("lora: the exclusions %v leave no layer to adapt: %w", c.ExcludeModules, ErrConfig)
	}
	return out, nil
}

func (c Config) layersNote() string {
	if len(c.LayersToTransform) == 0 {
		return ""
	}
	return fmt.Sprintf(" in blocks %v", c.LayersToTransform)
}

// shortTargets returns target_modules as PEFT writes them for the adapted
// modules: for each module the shortest dot-suffix of its name without a
// block number ("q_proj", "attn.c_proj") that selects, among available and
// with the configuration's layer filter, only adapted modules, or else its
// full name. PEFT's matching of that list selects exactly the adapted
// modules.
func (c Config) shortTargets(adapted, available []string) []string {
	inLayers, err := c.layerFilter()
	if err != nil {
		inLayers = func(string) bool { return true }
	}
	isAdapted := map[string]bool{}
	for _, m := range adapted {
		isAdapted[m] = true
	}
	set := map[string]bool{}
	for _, m := range adapted {
		parts := strings.Split(m, ".")
		short := m
		for k := len(parts) - 1; k > 0; k-- {
			if _, err := strconv.Atoi(parts[k]); err == nil {
				break // a suffix naming a block is the full name's job
			}
			suffix := strings.Join(parts[k:], ".")
			ok := true
			for _, name := range available {
				if name != suffix && strings.HasSuffix(name, "."+suffix) && inLayers(name) && !isAdapted[name] {
					ok = false
					break
				}
			}
			// A suffix shared with modules outside the layer filter is
			// fine: PEFT applies the same filter.
			if ok && inLayers(m) {
				short = suffix
				break
			}
		}
		set[short] = true
	}
	return sortedCopy(keys(set))
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// sortedCopy returns names sorted, for stable files.
func sortedCopy(names []string) []string {
	out := append([]string(nil), names...)
	sort.Strings(out)
	return out
}
