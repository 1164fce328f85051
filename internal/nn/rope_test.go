package nn

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"testing"

	G "gorgonia.org/gorgonia"
)

// TestRopeFreqsMatchTorch compares RopeFreqs with transformers' default,
// linear and llama3 inverse frequencies as computed in torch by
// testdata/rope_freqs.py.
func TestRopeFreqsMatchTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/rope_freqs.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Cases []struct {
			HeadDim int     `json:"head_dim"`
			Theta   float64 `json:"theta"`
			Scaling *struct {
				Type    string  `json:"type"`
				Factor  float64 `json:"factor"`
				Low     float64 `json:"low_freq_factor"`
				High    float64 `json:"high_freq_factor"`
				OrigMax int     `json:"original_max_position_embeddings"`
			} `json:"scaling"`
			InvFreq []float64 `json:"inv_freq"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	if len(golden.Cases) < 10 {
		t.Fatalf("%d golden cases, want the 11 the script writes", len(golden.Cases))
	}
	for _, c := range golden.Cases {
		var s *RopeScaling
		name := fmt.Sprintf("hd%d-theta%g", c.HeadDim, c.Theta)
		if c.Scaling != nil {
			s = &RopeScaling{Type: c.Scaling.Type, Factor: c.Scaling.Factor, LowFreqFactor: c.Scaling.Low,
				HighFreqFactor: c.Scaling.High, OriginalMaxPositions: c.Scaling.OrigMax}
			name += fmt.Sprintf("-%s%g", s.Type, s.Factor)
		}
		t.Run(name, func(t *testing.T) {
			got, err := RopeFreqs(c.HeadDim, c.Theta, s)
			if err != nil {
				t.Fatal(err)
			}
			// float32 pow may round differently from torch's by an ulp.
			assertClose(t, "inv_freq", got, c.InvFreq, 3e-7, 0)
		})
	}
}

func TestRopeFreqsErrors(t *testing.T) {
	for name, c := range map[string]struct {
		hd    int
		theta float64
		s     *RopeScaling
		want  error
	}{
		"odd head_dim":   {7, 1e4, nil, ErrShape},
		"zero head_dim":  {0, 1e4, nil, ErrShape},
		"theta 0":        {8, 0, nil, ErrRange},
		"theta NaN":      {8, math.NaN(), nil, ErrRange},
		"unknown type":   {8, 1e4, &RopeScaling{Type: "yarn", Factor: 2}, ErrRange},
		"factor 0":       {8, 1e4, &RopeScaling{Type: "linear"}, ErrRange},
		"llama3 low>=hi": {8, 1e4, &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 4, HighFreqFactor: 4, OriginalMaxPositions: 8192}, ErrRange},
		"llama3 no orig": {8, 1e4, &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4}, ErrRange},
	} {
		if _, err := RopeFreqs(c.hd, c.theta, c.s); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// refRope is the float64 rotate-half rotation of the first heads heads of
// each row; the other columns pass through.
func refRope(x []float64, width, heads, headDim int, pos []int32, invFreq []float32) []float64 {
	y := append([]float64(nil), x...)
	half := headDim / 2
	for r := range pos {
		for h := range heads {
			base := r*width + h*headDim
			for i := range half {
				a := float64(pos[r]) * float64(invFreq[i])
				c, s := math.Cos(a), math.Sin(a)
				x1, x2 := x[base+i], x[base+half+i]
				y[base+i] = x1*c - x2*s
				y[base+half+i] = x2*c + x1*s
			}
		}
	}
	return y
}

type ropeCase struct{ rows, heads, extra, headDim int }

// ropeCases: separate q (extra 0) and packed rows with unrotated v columns,
// odd row and head counts, a head_dim past one block of frequencies.
var ropeCases = []ropeCase{{1, 1, 0, 2}, {3, 2, 0, 6}, {5, 3, 1, 10}, {7, 4, 2, 8}, {2, 1, 0, 2*ropeBlock + 6}}

func TestRopeKernel(t *testing.T) {
	for _, c := range ropeCases {
		t.Run(fmt.Sprintf("R%dH%d+%dD%d", c.rows, c.heads, c.extra, c.headDim), func(t *testing.T) {
			width := (c.heads + c.extra) * c.headDim
			r := newRand(uint64(c.rows*100 + c.headDim))
			x, R := randn32(r, c.rows*width, 1), randn32(r, c.rows*width, 1)
			pos := randIDs(r, c.rows, 300)
			inv, err := RopeFreqs(c.headDim, 1e4, nil)
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			if err := RopeForward(y, x, width, c.heads, c.headDim, pos, inv); err != nil {
				t.Fatal(err)
			}
			x64, R64 := to64(x), to64(R)
			want := refRope(x64, width, c.heads, c.headDim, pos, inv)
			assertClose(t, "y", y, want, 1e-5, 1e-5)
			inPlace := append([]float32(nil), x...)
			if err := RopeForward(inPlace, inPlace, width, c.heads, c.headDim, pos, inv); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "y in place", inPlace, to64(y), 0, 0)

			back := append([]float32(nil), y...)
			if err := RopeInverse(back, back, width, c.heads, c.headDim, pos, inv); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "inverse of forward", back, x64, 1e-5, 1e-5)

			dx := filled(len(x), prefill)
			if err := RopeBackward(dx, R, width, c.heads, c.headDim, pos, inv); err != nil {
				t.Fatal(err)
			}
			loss := func() float64 { return dot64(R64, refRope(x64, width, c.heads, c.headDim, pos, inv)) }
			assertClose(t, "dx", minusPrefill(dx), numGrad(loss, x64), gradRtol, gradAtol)
		})
	}
}

// TestRopeDecodeOffset checks that rotating one row at its absolute
// position (a KV-cache decode step) equals the same row of the whole
// sequence, and that position 0 is the identity.
func TestRopeDecodeOffset(t *testing.T) {
	const T, heads, hd = 9, 3, 16
	width := heads * hd
	r := newRand(8)
	x := randn32(r, T*width, 1)
	inv, err := RopeFreqs(hd, 1e5, &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 4})
	if err != nil {
		t.Fatal(err)
	}
	full := make([]float32, len(x))
	if err := RopeForward(full, x, width, heads, hd, SequencePositions(1, T, 0).Data, inv); err != nil {
		t.Fatal(err)
	}
	assertClose(t, "position 0", full[:width], to64(x[:width]), 0, 0)
	for tt := range T {
		one := make([]float32, width)
		if err := RopeForward(one, x[tt*width:(tt+1)*width], width, heads, hd, SequencePositions(1, 1, tt).Data, inv); err != nil {
			t.Fatal(err)
		}
		assertClose(t, fmt.Sprintf("row %d", tt), one, to64(full[tt*width:(tt+1)*width]), 0, 0)
	}
}

func TestRopeErrors(t *testing.T) {
	inv := make([]float32, 2)
	x := make([]float32, 8)
	for name, c := range map[string]struct {
		err  error
		want error
	}{
		"odd head_dim":   {RopeForward(x, x, 8, 1, 3, []int32{0}, inv), ErrShape},
		"heads too many": {RopeForward(x, x, 8, 3, 4, []int32{0}, inv), ErrShape},
		"ragged":         {RopeForward(x[:7], x[:7], 4, 1, 4, []int32{0, 0}, inv), ErrShape},
		"positions len":  {RopeForward(x, x, 4, 1, 4, []int32{0}, inv), ErrShape},
		"invFreq len":    {RopeForward(x, x, 4, 1, 4, []int32{0, 1}, inv[:1]), ErrShape},
		"negative pos":   {RopeBackward(x, x, 4, 1, 4, []int32{0, -1}, inv), ErrRange},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", name, c.err, c.want)
		}
	}
	g := G.NewGraph()
	xn := matNode(g, "x", make([]float32, 8), 2, 4)
	if _, err := RoPE(xn, NewIDs(1, 3), inv, 1, 4); !errors.Is(err, ErrShape) {
		t.Errorf("RoPE with 3 positions for 2 rows: %v", err)
	}
	if _, err := RoPE(xn, NewIDs(1, 2), inv, 2, 4); !errors.Is(err, ErrShape) {
		t.Errorf("RoPE with 2 heads of 4 in width 4: %v", err)
	}
}

func TestRoPEOp(t *testing.T) {
	for _, c := range ropeCases[1:4] {
		t.Run(fmt.Sprintf("R%dH%d+%dD%d", c.rows, c.heads, c.extra, c.headDim), func(t *testing.T) {
			width := (c.heads + c.extra) * c.headDim
			r := newRand(uint64(c.rows*7 + c.headDim))
			xD, R := randn32(r, c.rows*width, 1), randn32(r, c.rows*width, 1)
			pos := NewIDs(1, c.rows)
			copy(pos.Data, randIDs(r, c.rows, 100))
			inv, err := RopeFreqs(c.headDim, 1e4, &RopeScaling{Type: "linear", Factor: 2})
			if err != nil {
				t.Fatal(err)
			}
			g := G.NewGraph()
			x := matNode(g, "x", xD, c.rows, width)
			y, err := RoPE(x, pos, inv, c.heads, c.headDim)
			if err != nil {
				t.Fatal(err)
			}
			// RMSNorm after the rotation makes x's upstream gradient more
			// than R itself.
			w := vecNode(g, "w", randn32(r, width, 1))
			z, err := RMSNorm(y, w, 1e-6)
			if err != nil {
				t.Fatal(err)
			}
			m := machine(t, weightedSum(t, z, R), x)
			run(t, m)
			x64, R64, w64 := to64(xD), to64(R), to64(w.Value().Data().([]float32))
			assertClose(t, "y", y.Value().Data().([]float32), refRope(x64, width, c.heads, c.headDim, pos.Data, inv), 1e-5, 1e-5)
			loss := func() float64 {
				return dot64(R64, refRMSNorm(refRope(x64, width, c.heads, c.headDim, pos.Data, inv), w64, width, 1e-6))
			}
			assertClose(t, "dx", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)

			// Refilled positions are read by the next run.
			for i := range pos.Data {
				pos.Data[i] += 17
			}
			zeroGrad(t, x)
			run(t, m)
			assertClose(t, "y after refill", y.Value().Data().([]float32), refRope(x64, width, c.heads, c.headDim, pos.Data, inv), 1e-5, 1e-5)
			assertClose(t, "dx after refill", gradOf(t, x), numGrad(loss, x64), gradRtol, gradAtol)
		})
	}
}

// TestRopeTable checks that rotating a batch whose positions repeat (the
// path through rope's per-position table) gives bit for bit what rotating
// each row alone (angles computed per row) gives, forward, inverse and
// accumulated, with an odd number of frequencies and a packed row with a
// tail.
func TestRopeTable(t *testing.T) {
	const B, T, heads, hd, width = 3, 5, 3, 6, 3*6 + 4
	r := newRand(7)
	pos := SequencePositions(B, T, 11).Data
	pos[4] = 20 // the span (11…20, 10 < 15 rows) need not be contiguous
	inv, err := RopeFreqs(hd, 1e4, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := randn32(r, B*T*width, 1)
	for _, sign := range []float32{1, -1} {
		for _, acc := range []bool{false, true} {
			got := randn32(r, len(x), 1)
			want := append([]float32(nil), got...)
			rope(got, x, width, heads, hd, pos, inv, sign, acc)
			for row := range B * T {
				o := row * width
				rope(want[o:o+width], x[o:o+width], width, heads, hd, pos[row:row+1], inv, sign, acc)
			}
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("sign %v acc %t: element %d = %g, row by row %g", sign, acc, i, got[i], want[i])
				}
			}
		}
	}
}
