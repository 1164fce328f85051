package model

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
)

func samplerTestData(n int) []byte {
	d := make([]byte, n)
	for i := range d {
		d[i] = byte(i*7 + i/256) // distinct enough to locate windows
	}
	return d
}

// starts recovers each window's start from a data set where position i
// holds a unique value (len ≤ 256 with d[i] = i).
func windowsValid(t *testing.T, data []byte, T int, in, tgt []int32) {
	t.Helper()
	for off := 0; off < len(in); off += T {
		found := false
		for s := 0; s < len(data)-T-1 && !found; s++ {
			ok := true
			for i := 0; i < T && ok; i++ {
				ok = in[off+i] == int32(data[s+i]) && tgt[off+i] == int32(data[s+i+1])
			}
			found = ok
		}
		if !found {
			t.Fatalf("window at %d is not data[s:s+T], data[s+1:s+T+1] for any s in [0, len-T-1)", off)
		}
	}
}

func TestSamplerDeterministicAndSeeded(t *testing.T) {
	data := samplerTestData(10000)
	a, err := NewSampler(data, 16, 42)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSampler(data, 16, 42)
	c, _ := NewSampler(data, 16, 43)
	for range 10 {
		ai, at := a.Next(4)
		bi, bt := b.Next(4)
		ci, _ := c.Next(4)
		if !reflect.DeepEqual(ai, bi) || !reflect.DeepEqual(at, bt) {
			t.Fatal("same seed, different batches")
		}
		if reflect.DeepEqual(ai, ci) {
			t.Fatal("different seeds, same batch")
		}
		windowsValid(t, data, 16, ai, at)
	}
}

// TestSamplerBounds uses data where each byte is its position, so every
// window's start is its first input: starts must cover exactly
// [0, len−T−1), as torch.randint(0, len−T−1) in the anchor.
func TestSamplerBounds(t *testing.T) {
	const T = 5
	data := make([]byte, 40)
	for i := range data {
		data[i] = byte(i)
	}
	s, err := NewSampler(data, T, 7)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int32]int{}
	for range 2000 {
		in, tgt := s.Next(3)
		for off := 0; off < len(in); off += T {
			st := in[off]
			seen[st]++
			for i := range T {
				if in[off+i] != st+int32(i) || tgt[off+i] != st+int32(i)+1 {
					t.Fatalf("window %v / %v is not contiguous", in[off:off+T], tgt[off:off+T])
				}
			}
		}
	}
	n := len(data) - T - 1
	if len(seen) != n {
		t.Fatalf("%d distinct starts, want %d", len(seen), n)
	}
	for st, k := range seen {
		if st < 0 || int(st) >= n {
			t.Fatalf("start %d outside [0, %d)", st, n)
		}
		if k < 6000/n/2 || k > 6000/n*2 { // 6000 draws over n starts: far from uniform?
			t.Errorf("start %d drawn %d times of 6000", st, k)
		}
	}
	// The smallest data set has one possible start.
	one, err := NewSampler(data[:T+2], T, 1)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if in, _ := one.Next(1); in[0] != 0 {
			t.Fatalf("start %d with a single possible start", in[0])
		}
	}
}

func TestSamplerStateRestore(t *testing.T) {
	data := samplerTestData(5000)
	s, _ := NewSampler(data, 8, 3)
	for range 3 {
		s.Next(2)
	}
	state := s.State()
	var want [][]int32
	for range 5 {
		in, tgt := s.Next(2)
		want = append(want, append(append([]int32{}, in...), tgt...))
	}
	// Restore into the same sampler and into a fresh one with another seed.
	fresh, _ := NewSampler(data, 8, 999)
	for _, r := range []*Sampler{s, fresh} {
		if err := r.SetState(state); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			in, tgt := r.Next(2)
			if got := append(append([]int32{}, in...), tgt...); !reflect.DeepEqual(got, want[i]) {
				t.Fatalf("batch %d after restore differs", i)
			}
		}
	}
	if !bytes.Equal(s.State(), fresh.State()) {
		t.Fatal("states differ after the same draws")
	}

	other, _ := NewSampler(data[:4000], 8, 3)
	if err := other.SetState(state); !errors.Is(err, ErrData) {
		t.Fatalf("state for other data: %v", err)
	}
	otherT, _ := NewSampler(data, 9, 3)
	if err := otherT.SetState(state); !errors.Is(err, ErrData) {
		t.Fatalf("state for other T: %v", err)
	}
	for _, bad := range [][]byte{nil, {1}, state[:len(state)-1], append([]byte{2}, state[1:]...)} {
		if err := s.SetState(bad); !errors.Is(err, ErrData) {
			t.Fatalf("bad state %v: %v", bad, err)
		}
	}
	corrupt := append([]byte{}, state...)
	copy(corrupt[17:], "xyz:")
	if err := s.SetState(corrupt); !errors.Is(err, ErrData) {
		t.Fatalf("corrupt PCG state: %v", err)
	}
}

func TestSamplerNoAllocation(t *testing.T) {
	s, _ := NewSampler(samplerTestData(5000), 64, 1)
	in, tgt := make([]int32, 8*64), make([]int32, 8*64)
	if n := testing.AllocsPerRun(100, func() { _ = s.NextBatch(in, tgt) }); n != 0 {
		t.Fatalf("NextBatch allocates %v times", n)
	}
	s.Next(8)
	if n := testing.AllocsPerRun(100, func() { s.Next(8) }); n != 0 {
		t.Fatalf("Next allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.Next(4) }); n != 0 {
		t.Fatalf("Next with a smaller batch allocates %v times", n)
	}
}

func TestSamplerErrors(t *testing.T) {
	data := samplerTestData(100)
	if _, err := NewSampler(data, 0, 1); !errors.Is(err, ErrData) {
		t.Fatal(err)
	}
	if _, err := NewSampler(data, 99, 1); !errors.Is(err, ErrData) {
		t.Fatal(err)
	}
	if _, err := NewSampler(nil, 1, 1); !errors.Is(err, ErrData) {
		t.Fatal(err)
	}
	s, err := NewSampler(data, 98, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]int{{0, 0}, {98, 97}, {97, 97}, {196, 98}} {
		if err := s.NextBatch(make([]int32, c[0]), make([]int32, c[1])); !errors.Is(err, ErrData) {
			t.Fatalf("buffers %v: %v", c, err)
		}
	}
	if in, tgt := s.Next(0); in != nil || tgt != nil {
		t.Fatal("Next(0) returned windows")
	}
	if in, _ := s.Next(math.MaxInt); in != nil {
		t.Fatal("Next(MaxInt) returned windows")
	}
}

// TestValidationWindowsFixed pins the windows for one seed: a change of
// RNG or of the start rule would silently change every validation loss.
func TestValidationWindowsFixed(t *testing.T) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i % 251)
	}
	in, tgt, err := ValidationWindows(data, 6, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	in2, tgt2, _ := ValidationWindows(data, 6, 4, 1)
	if !reflect.DeepEqual(in, in2) || !reflect.DeepEqual(tgt, tgt2) {
		t.Fatal("validation windows are not deterministic")
	}
	var starts []int32
	for w := range 6 {
		starts = append(starts, in[4*w])
		for i := range 4 {
			if tgt[4*w+i] != (in[4*w+i]+1)%251 {
				t.Fatalf("targets are not inputs shifted by one")
			}
		}
	}
	want := []int32{130, 185, 211, 181, 155, 99}
	if !reflect.DeepEqual(starts, want) {
		t.Fatalf("first inputs of the windows %v, want %v", starts, want)
	}
	if _, _, err := ValidationWindows(data, 0, 4, 1); !errors.Is(err, ErrData) {
		t.Fatal(err)
	}
	if _, _, err := ValidationWindows(data[:5], 1, 4, 1); !errors.Is(err, ErrData) {
		t.Fatal(err)
	}
	if _, _, err := ValidationWindows(data, math.MaxInt/2, 4, 1); !errors.Is(err, ErrData) {
		t.Fatal(err)
	}
}

func TestBitsPerByte(t *testing.T) {
	if got := BitsPerByte(math.Ln2); math.Abs(got-1) > 1e-15 {
		t.Fatalf("BitsPerByte(ln 2) = %v", got)
	}
	if got := BitsPerByte(math.Log(256)); math.Abs(got-8) > 1e-12 {
		t.Fatalf("BitsPerByte(ln 256) = %v, want 8 (uniform over bytes)", got)
	}
}
