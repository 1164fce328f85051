package lora

import (
	"math"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/stretchr/testify/require"
)

// NaN or Inf in an adapter's A or B is refused at load, naming the tensor;
// a lora_alpha whose float32 scale is infinite is refused as a config.
func TestLoadRefusesNonFiniteAdapter(t *testing.T) {
	dir := t.TempDir()
	lm, err := Apply(newBase(t, 32, 2), loraConfig())
	require.NoError(t, err)
	require.NoError(t, lm.Active().Save(dir))
	p := filepath.Join(dir, WeightsFile)
	f, err := safetensors.ReadFile(p)
	require.NoError(t, err)
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
		ts := append([]safetensors.Tensor{}, f.Tensors...)
		vals, err := ts[1].Float32s()
		require.NoError(t, err)
		vals[0] = bad
		ts[1] = safetensors.F32Tensor(ts[1].Name, ts[1].Shape, vals)
		require.NoError(t, safetensors.WriteFile(p, ts, f.Metadata))
		lm2, err := Wrap(newBase(t, 32, 2))
		require.NoError(t, err)
		_, err = lm2.LoadAdapter(dir, "x")
		require.ErrorIs(t, err, ErrAdapterFile)
		require.ErrorContains(t, err, strconv.Quote(ts[1].Name))
	}
	cfg := loraConfig()
	cfg.Alpha = 1e308
	require.ErrorIs(t, cfg.Validate(), ErrConfig)
}
