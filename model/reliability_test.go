package model

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/stretchr/testify/require"
)

// A checkpoint padded to 4 GiB with truncate (sparse) is refused from its
// header: the loader allocates a small fraction of the claimed size.
func TestLoadRefusesSparsePaddedCheckpoint(t *testing.T) {
	m := testModel(t, nil)
	p := filepath.Join(t.TempDir(), "m.safetensors")
	require.NoError(t, m.Save(p))
	require.NoError(t, os.Truncate(p, 4<<30))
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	_, err := Load(p)
	runtime.ReadMemStats(&b)
	require.ErrorIs(t, err, ErrCheckpoint)
	require.ErrorIs(t, err, safetensors.ErrCorrupt)
	require.Less(t, b.TotalAlloc-a.TotalAlloc, uint64(64<<20))
}

// Saving to a directory is an error before anything is written, and a
// leftover of a crashed save is replaced by the next save.
func TestSaveDirectoryAndLeftovers(t *testing.T) {
	m := testModel(t, nil)
	dir := t.TempDir()
	err := m.Save(dir)
	require.Error(t, err)
	require.Contains(t, err.Error(), "is a directory")
	ents, _ := os.ReadDir(filepath.Dir(dir))
	for _, e := range ents {
		require.NotContains(t, e.Name(), ".tmp")
	}
	p := filepath.Join(dir, "m.safetensors")
	require.NoError(t, os.WriteFile(safetensors.TempName(p), make([]byte, 1<<10), 0o600))
	require.NoError(t, m.Save(p))
	ents, err = os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	_, err = Load(p)
	require.NoError(t, err)
	_, err = Load(filepath.Join(dir, "missing"))
	require.True(t, errors.Is(err, os.ErrNotExist))
}

// API misuse returns errors: Generate with math.MaxInt tokens (cancelled
// by its context), Step with nil data or after Close, and a NaN or
// negative ClipNorm.
func TestTrainerAndGenerateMisuse(t *testing.T) {
	m := testModel(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	out, err := m.Generate(ctx, []int32{1, 2, 3}, math.MaxInt, SampleOptions{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	_ = out

	for _, c := range []float64{math.NaN(), -1, math.Inf(1)} {
		cfg := testTrainConfig()
		cfg.ClipNorm = c
		_, err := NewTrainer(m, cfg)
		require.Error(t, err, "ClipNorm %v", c)
	}
	tr, err := NewTrainer(m, testTrainConfig())
	require.NoError(t, err)
	_, err = tr.Step(context.Background(), nil)
	require.ErrorContains(t, err, "nil data")
	s, err := NewSampler(syntheticText(20000), m.Config.SeqLen, 1)
	require.NoError(t, err)
	_, err = tr.Step(context.Background(), s)
	require.NoError(t, err)
	require.NoError(t, tr.Close())
	require.NoError(t, tr.Close())
	_, err = tr.Step(context.Background(), s)
	require.ErrorContains(t, err, "closed")
}

// Non-finite weights and negative second moments are refused at load, and
// the error names the tensor.
func TestLoadRefusesNonFinite(t *testing.T) {
	dir := t.TempDir()
	m := testModel(t, nil)
	tr, err := NewTrainer(m, testTrainConfig())
	require.NoError(t, err)
	defer tr.Close()
	s, err := NewSampler(syntheticText(20000), m.Config.SeqLen, 1)
	require.NoError(t, err)
	_, err = tr.Step(context.Background(), s)
	require.NoError(t, err)
	p := filepath.Join(dir, "ck.safetensors")
	require.NoError(t, tr.Save(p, nil))
	name := m.Weights.Params[0].Name
	for _, c := range []struct {
		tensor string
		v      float32
	}{
		{name, float32(math.NaN())},
		{name, float32(math.Inf(-1))},
		{optimMPrefix + name, float32(math.Inf(1))},
		{optimVPrefix + name, -1},
	} {
		f, err := safetensors.ReadFile(p)
		require.NoError(t, err)
		for i, x := range f.Tensors {
			if x.Name == c.tensor {
				vals, err := x.Float32s()
				require.NoError(t, err)
				vals[len(vals)/2] = c.v
				f.Tensors[i] = safetensors.F32Tensor(x.Name, x.Shape, vals)
			}
		}
		q := filepath.Join(dir, "bad.safetensors")
		require.NoError(t, safetensors.WriteFile(q, f.Tensors, f.Metadata))
		_, err = LoadCheckpoint(q)
		require.ErrorIs(t, err, ErrCheckpoint, "%s = %v", c.tensor, c.v)
		require.ErrorContains(t, err, strconv.Quote(c.tensor))
	}
	f, err := safetensors.ReadFile(p)
	require.NoError(t, err)
	f.Metadata[metaStep] = strconv.FormatInt(math.MaxInt64, 10)
	q := filepath.Join(dir, "step.safetensors")
	require.NoError(t, safetensors.WriteFile(q, f.Tensors, f.Metadata))
	_, err = LoadCheckpoint(q)
	require.ErrorIs(t, err, ErrCheckpoint)
}

// Loss and Evaluate over targets that are all the ignore index −1 have
// nothing to score: an error, never a loss of zero. One counted target
// brings a finite loss back.
func TestLossAllTargetsIgnored(t *testing.T) {
	m := testModel(t, nil)
	T := 5
	inputs := []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	targets := make([]int32, len(inputs))
	for i := range targets {
		targets[i] = -1
	}
	_, err := m.Loss(inputs, targets, 2, T)
	require.ErrorIs(t, err, ErrNoTargets)
	_, err = m.Evaluate(inputs, targets, T, 2)
	require.ErrorIs(t, err, ErrNoTargets)

	targets[7] = 3
	loss, err := m.Loss(inputs, targets, 2, T)
	require.NoError(t, err)
	require.Greater(t, loss, 0.0)
	require.False(t, math.IsInf(loss, 0) || math.IsNaN(loss))
}
