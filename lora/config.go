package lora

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
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
// targeted linear layer (alpha/√r with UseRSLoRA).
type Config struct {
	R       int     // rank; must be positive
	Alpha   float64 // lora_alpha; must be positive
	Dropout float64 // dropout on the adapter input during training, in [0, 1)

	// TargetModules selects the adapted linear layers. Each entry is an
	// exact module name ("transformer.h.0.attn.c_attn"), a name suffix
	// matched at a dot ("c_attn", "mlp.c_proj"), a regular expression
	// prefixed with "re:" that must match the whole name, or AllLinear.
	// Every entry must match at least one layer.
	TargetModules []string
	// ExcludeModules removes layers from the selection, with the same
	// matching rules (AllLinear is not allowed here).
	ExcludeModules []string

	UseRSLoRA bool   // scale alpha/√r instead of alpha/r
	Init      Init   // "" means InitKaiming
	Seed      uint64 // seed of the initialization and of the dropout masks

	// BaseModel is written as base_model_name_or_path in adapter_config.json.
	BaseModel string
}

// Scale returns the factor applied to B·A: Alpha/R, or Alpha/√R with rsLoRA.
func (c Config) Scale() float64 {
	if c.UseRSLoRA {
		return c.Alpha / math.Sqrt(float64(c.R))
	}
	return c.Alpha / float64(c.R)
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
	case math.IsInf(float64(float32(c.Scale())), 0) || float32(c.Scale()) == 0:
		// The scale multiplies float32 activations: lora_alpha 1e308 is
		// finite but its scale is +Inf there.
		return fmt.Errorf("lora: lora_alpha = %v, r = %d: scale %v is not a finite nonzero float32: %w", c.Alpha, c.R, c.Scale(), ErrConfig)
	}
	for _, t := range c.TargetModules {
		if _, err := newMatcher(t); err != nil {
			return err
		}
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

type matcher func(name string) bool

func newMatcher(t string) (matcher, error) {
	switch {
	case t == "":
		return nil, fmt.Errorf("lora: empty target module: %w", ErrConfig)
	case t == AllLinear:
		return func(name string) bool { return name != model.NameHead }, nil
	case strings.HasPrefix(t, "re:"):
		re, err := regexp.Compile("^(?:" + t[3:] + ")$")
		if err != nil {
			return nil, fmt.Errorf("lora: target pattern %q: %v: %w", t, err, ErrConfig)
		}
		return re.MatchString, nil
	}
	return func(name string) bool { return name == t || strings.HasSuffix(name, "."+t) }, nil
}

// Resolve returns the linear layers of m that the configuration adapts, in
// the model's order. A target that matches no layer is an error naming the
// model's layers.
func (c Config) Resolve(m *model.Model) ([]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return resolve(c.TargetModules, c.ExcludeModules, m.LinearNames())
}

func resolve(targets, exclude, available []string) ([]string, error) {
	selected := map[string]bool{}
	for _, t := range targets {
		match, err := newMatcher(t)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, name := range available {
			if match(name) {
				selected[name] = true
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("lora: target module %q matches none of the model's linear layers %v: %w", t, available, ErrConfig)
		}
	}
	for _, t := range exclude {
		match, err := newMatcher(t)
		if err != nil {
			return nil, err
		}
		for name := range selected {
			if match(name) {
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
		return nil, fmt.Errorf("lora: the exclusions %v leave no layer to adapt: %w", exclude, ErrConfig)
	}
	return out, nil
}

// sortedCopy returns names sorted, for stable files.
func sortedCopy(names []string) []string {
	out := append([]string(nil), names...)
	sort.Strings(out)
	return out
}
