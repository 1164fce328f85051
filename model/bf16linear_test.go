package model

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// TestKeepBF16 loads BF16 checkpoints (sharded Llama, Qwen2 with biases)
// with KeepBF16: the linears become BF16Linear over the file's bits, the
// float32 Weights no longer hold them, logits and input gradients match the
// float32 load (which holds the same bf16 values widened) to the rounding
// of activations to bf16, and SavePretrained writes the files back byte for
// byte.
func TestKeepBF16(t *testing.T) {
	for _, k := range hfKinds() {
		if k.dtype != "bfloat16" {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			dir := t.TempDir()
			writeKind(t, k, dir)
			ref, err := LoadPretrained(dir)
			if err != nil {
				t.Fatal(err)
			}
			m, err := LoadPretrained(dir, KeepBF16())
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range m.LinearNames() {
				l, _ := m.Linear(name)
				bl, ok := l.(*BF16Linear)
				if !ok {
					t.Fatalf("%s is %T, want *BF16Linear", name, l)
				}
				if m.Weights.Get(name+".weight") != nil {
					t.Fatalf("%s.weight is still held in float32", name)
				}
				// The same values as the float32 load, in the file's layout.
				w := ref.Weights.Get(name + ".weight")
				in, out := bl.Dims()
				for i := range in {
					for o := range out {
						v := bl.Weight[i*out+o]
						if bl.OutIn {
							v = bl.Weight[o*in+i]
						}
						if kernels.BF16ToFloat32(v) != w.Data[i*out+o] {
							t.Fatalf("%s[%d][%d] = %g, float32 load has %g", name, i, o, kernels.BF16ToFloat32(v), w.Data[i*out+o])
						}
					}
				}
			}
			if m.NumParams() >= ref.NumParams() {
				t.Fatalf("bf16 model holds %d float32 weights, float32 model %d", m.NumParams(), ref.NumParams())
			}

			// Logits: activations are rounded to bf16 at each linear.
			B, T := 2, 7
			ids := make([]int32, B*T)
			for i := range ids {
				ids[i] = int32((i*13 + 5) % k.cfg.Vocab)
			}
			want, err := ref.Logits(ids, B, T)
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.Logits(ids, B, T)
			if err != nil {
				t.Fatal(err)
			}
			compareRel(t, "logits", got, want, 0.03)

			// A training graph: gradients of the float32 parameters
			// (embeddings, norms) flow through the bf16 layers' input
			// gradients.
			targets := append(ids[1:], 0)
			gw := gradsOf(t, ref, ids, targets, B, T)
			gb := gradsOf(t, m, ids, targets, B, T)
			for _, p := range m.Weights.Params {
				q := ref.Weights.Get(p.Name)
				compareRel(t, p.Name+" gradient", gb[p.Offset:p.Offset+p.Size()], gw[q.Offset:q.Offset+q.Size()], 0.05)
			}

			// Saved back untouched.
			out := filepath.Join(t.TempDir(), "out")
			var opts []SaveOption
			if k.shard > 0 {
				opts = append(opts, WithMaxShardSize(k.shard))
			}
			if err := m.SavePretrained(out, opts...); err != nil {
				t.Fatal(err)
			}
			files, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
			if len(files) == 0 {
				t.Fatal("no safetensors files written")
			}
			for _, f := range files {
				a, _ := os.ReadFile(f)
				b, err := os.ReadFile(filepath.Join(out, filepath.Base(f)))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(a, b) {
					t.Fatalf("%s differs after a KeepBF16 round trip", filepath.Base(f))
				}
			}
		})
	}
}

// gradsOf returns the gradient of m's trainable parameters on one batch.
func gradsOf(t *testing.T, m *Model, inputs, targets []int32, B, T int) []float32 {
	t.Helper()
	r, err := m.NewReplica(B, T)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ForwardBackward(inputs, targets, 1); err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), r.Grad...)
}

// compareRel fails unless got and want agree within tol of want's largest
// magnitude.
func compareRel(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var scale float64
	for _, v := range want {
		scale = max(scale, math.Abs(float64(v)))
	}
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); !(d <= tol*scale) {
			t.Fatalf("%s[%d] = %g, want %g (scale %g)", what, i, got[i], want[i], scale)
		}
	}
}

// TestBF16LinearGradient checks both layouts' forward and input gradient
// against float64 products of the bf16 values.
func TestBF16LinearGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const in, out, rows = 19, 23, 5
	for _, outIn := range []bool{false, true} {
		w := make([]uint16, in*out)
		for i := range w {
			w[i] = kernels.Float32ToBF16(float32(rng.NormFloat64()))
		}
		bias := make([]float32, out)
		for i := range bias {
			bias[i] = float32(rng.NormFloat64())
		}
		l, err := NewBF16Linear(w, in, out, outIn, bias)
		if err != nil {
			t.Fatal(err)
		}
		wAt := func(i, o int) float64 {
			if outIn {
				return float64(kernels.BF16ToFloat32(w[o*in+i]))
			}
			return float64(kernels.BF16ToFloat32(w[i*out+o]))
		}
		x := make([]float32, rows*in)
		for i := range x {
			x[i] = kernels.RoundBF16(float32(rng.NormFloat64()))
		}
		y := make([]float32, rows*out)
		if err := l.Forward(y, x, rows); err != nil {
			t.Fatal(err)
		}
		dy := make([]float32, rows*out)
		for i := range dy {
			dy[i] = kernels.RoundBF16(float32(rng.NormFloat64()))
		}
		dx := make([]float32, rows*in)
		if err := l.BackwardInput(dx, dy, rows); err != nil {
			t.Fatal(err)
		}
		if err := l.BackwardInput(dx, dy[:4], rows); err == nil {
			t.Fatal("BackwardInput accepted a short gradient")
		}
		for r := range rows {
			for o := range out {
				s := float64(bias[o])
				for i := range in {
					s += float64(x[r*in+i]) * wAt(i, o)
				}
				if math.Abs(float64(y[r*out+o])-s) > 1e-4*(1+math.Abs(s)) {
					t.Fatalf("outIn=%v: y[%d][%d] = %g, want %g", outIn, r, o, y[r*out+o], s)
				}
			}
			for i := range in {
				var s float64
				for o := range out {
					s += float64(dy[r*out+o]) * wAt(i, o)
				}
				if math.Abs(float64(dx[r*in+i])-s) > 1e-4*(1+math.Abs(s)) {
					t.Fatalf("outIn=%v: dx[%d][%d] = %g, want %g", outIn, r, i, dx[r*in+i], s)
				}
			}
		}
		if err := l.Forward(y, x[:3], rows); err == nil {
			t.Fatal("Forward accepted a short input")
		}
	}
	if _, err := NewBF16Linear(make([]uint16, 5), 2, 3, false, nil); err == nil {
		t.Fatal("NewBF16Linear accepted a weight of the wrong size")
	}
}
