package nn

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestOutBufReuse(t *testing.T) {
	var b OutBuf
	if b.Used() {
		t.Fatal("zero OutBuf reports Used")
	}
	m := b.Get(2, 3)
	if !m.Shape().Eq(tensor.Shape{2, 3}) || len(m.Float32s()) != 6 || !b.Used() {
		t.Fatalf("Get(2, 3): shape %v, %d elements", m.Shape(), len(m.Float32s()))
	}
	if b.Get(2, 3) != m {
		t.Fatal("same shape: header not reused")
	}
	if n := testing.AllocsPerRun(10, func() { b.Get(2, 3) }); n != 0 {
		t.Fatalf("Get on an intact buffer allocates %v times", n)
	}
	// Same size, other shape: new header, same memory.
	m2 := b.Get(3, 2)
	if m2 == m || &m2.Float32s()[0] != &m.Float32s()[0] {
		t.Fatal("Get(3, 2) after Get(2, 3): want a new header over the same memory")
	}
	// A header someone reshaped (as tensor's pool may hand it out again) is
	// rebuilt rather than returned.
	if err := m2.Reshape(6); err != nil {
		t.Fatal(err)
	}
	if m3 := b.Get(3, 2); m3 == m2 || !m3.Shape().Eq(tensor.Shape{3, 2}) {
		t.Fatalf("reshaped header returned: %v", m3.Shape())
	}
	v := b.Get(6, -1)
	if s := v.Shape(); len(s) != 1 || s[0] != 6 {
		t.Fatalf("Get(6, -1): shape %v, want (6)", s)
	}
	r4 := b.GetShape(1, 2, 3, 1)
	if s := r4.Shape(); len(s) != 4 || &r4.Float32s()[0] != &m.Float32s()[0] {
		t.Fatalf("GetShape(1, 2, 3, 1): shape %v or new memory", s)
	}
	if g := b.Get(4, 4); len(g.Float32s()) != 16 {
		t.Fatalf("Get(4, 4): %d elements", len(g.Float32s()))
	}
	if z := b.Get(0, 3); len(z.Float32s()) != 0 || b.Get(0, 3) != z {
		t.Fatal("empty buffer not reused")
	}
}

func TestOutBufView(t *testing.T) {
	var b OutBuf
	own := b.Get(2, 2)
	data := make([]float32, 4)
	v := b.View(data, 2, 2)
	if v == own || &v.Float32s()[0] != &data[0] {
		t.Fatal("View does not wrap the caller's data")
	}
	if b.View(data, 2, 2) != v {
		t.Fatal("View over the same data: header not reused")
	}
	other := make([]float32, 4)
	if w := b.View(other, 2, 2); w == v || &w.Float32s()[0] != &other[0] {
		t.Fatal("View over other data returned the old header")
	}
	if g := b.Get(2, 2); &g.Float32s()[0] == &other[0] || &g.Float32s()[0] == &data[0] {
		t.Fatal("Get after View returned the caller's memory")
	}
}

func TestFloat32s(t *testing.T) {
	sentinel := errors.New("sentinel")
	ok := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(make([]float32, 6)))
	if d, err := Float32s("pkg", "Op", "x", ok, 6, sentinel); err != nil || len(d) != 6 {
		t.Fatalf("valid value: %d elements, %v", len(d), err)
	}
	view, err := ok.Slice(nil, G.S(0, 2))
	if err != nil {
		t.Fatal(err)
	}
	f := G.F32(1)
	for _, tc := range []struct {
		name string
		v    G.Value
		n    int
		want string
	}{
		{"not dense", &f, 1, "pkg: Op: x is a *gorgonia.F32, want *tensor.Dense"},
		{"float64", tensor.New(tensor.WithShape(2), tensor.Of(tensor.Float64)), 2, "pkg: Op: x has dtype float64, want float32"},
		{"view", view.(*tensor.Dense), 4, "pkg: Op: x is a non-contiguous view"},
		{"size", ok, 5, "pkg: Op: x has shape (2, 3), want 5 elements"},
	} {
		_, err := Float32s("pkg", "Op", "x", tc.v, tc.n, sentinel)
		if !errors.Is(err, sentinel) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q… wrapping the sentinel", tc.name, err, tc.want)
		}
	}
	if _, err := Float32s("pkg", "Op", "x", ok, 5, nil); !errors.Is(err, ErrShape) {
		t.Errorf("nil sentinel: error %v does not wrap ErrShape", err)
	}
}

func TestOutBufDoAndPreallocDo(t *testing.T) {
	var b OutBuf
	fill := func(dst []float32) error {
		for i := range dst {
			dst[i] = float32(i)
		}
		return nil
	}
	v, err := b.Do(2, 3, fill)
	if err != nil || v != G.Value(b.Get(2, 3)) || v.(*tensor.Dense).Float32s()[5] != 5 {
		t.Fatalf("Do = %v, %v; want the buffer, filled", v, err)
	}
	boom := errors.New("boom")
	fail := func([]float32) error { return boom }
	if v, err := b.Do(2, 3, fail); v != nil || err != boom {
		t.Fatalf("Do with failing compute = %v, %v; want nil, boom", v, err)
	}

	pre := tensor.New(tensor.WithShape(2, 3), tensor.Of(tensor.Float32))
	if v, err := PreallocDo("nn", "Test", pre, 6, nil, fill); err != nil || v != G.Value(pre) || pre.Float32s()[4] != 4 {
		t.Fatalf("PreallocDo = %v, %v; want prealloc, filled", v, err)
	}
	if v, err := PreallocDo("nn", "Test", pre, 6, nil, fail); v != nil || err != boom {
		t.Fatalf("PreallocDo with failing compute = %v, %v; want nil, boom", v, err)
	}
	ran := false
	v, err = PreallocDo("nn", "Test", pre, 7, ErrRange, func([]float32) error { ran = true; return nil })
	if v != nil || ran || !errors.Is(err, ErrRange) || !strings.HasPrefix(err.Error(), "nn: Test: prealloc has shape") {
		t.Fatalf("PreallocDo with a wrong shape = %v, %v (compute ran: %v)", v, err, ran)
	}

	in := []float32{1}
	if n := testing.AllocsPerRun(10, func() {
		b.Do(2, 3, func(dst []float32) error { dst[0] = in[0]; return nil })
		PreallocDo("nn", "Test", pre, 6, nil, func(dst []float32) error { dst[0] = in[0]; return nil })
	}); n != 0 {
		t.Errorf("Do and PreallocDo allocate %v times per call, want 0", n)
	}
}

// TestNewGradForOtherPackages builds a gradient the way lora's ops do:
// named after the calling package, skipped for a target without a
// derivative, and computed for one with.
func TestNewGradForOtherPackages(t *testing.T) {
	a, b := NewOpBase(), NewOpBase()
	if a.Serial() == b.Serial() {
		t.Fatalf("two op bases share serial %d", a.Serial())
	}
	g := G.NewGraph()
	x := matNode(g, "x", []float32{1, 2, 3, 4, 5, 6}, 2, 3)
	frozen := matNode(g, "frozen", make([]float32, 6), 2, 3)
	y, err := GELU(x)
	if err != nil {
		t.Fatal(err)
	}
	double := func(dst []float32, in []G.Value) error {
		v, err := Float32s("pkg", "Double", "x", in[0], 6, nil)
		if err != nil {
			return err
		}
		for i := range dst {
			dst[i] = 2 * v[i]
		}
		return nil
	}
	dx, err := NewGrad("pkg", "Double", a.Serial(), x, 2, 3, double, y)
	if err != nil {
		t.Fatal(err)
	}
	df, err := NewGrad("pkg", "Double", a.Serial(), frozen, 2, 3, double, y)
	if err != nil {
		t.Fatal(err)
	}
	if s := dx.Op().(fmt.Stringer).String(); s != fmt.Sprintf("pkg.Double(fwd#%d)", a.Serial()) {
		t.Errorf("String() = %q", s)
	}
	cost, err := G.Sum(y)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(cost, x); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	want := y.Value().Data().([]float32)
	got := dx.Value().Data().([]float32)
	for i := range want {
		if got[i] != 2*want[i] {
			t.Fatalf("dx[%d] = %g, want %g", i, got[i], 2*want[i])
		}
	}
	if s := df.Shape(); df.Value().Shape().TotalSize() != 1 {
		t.Errorf("frozen target's gradient has shape %v (node %v), want the 1×1 placeholder", df.Value().Shape(), s)
	}
}
