package nn

import (
	"errors"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestConstructorErrors(t *testing.T) {
	g := G.NewGraph()
	f := func(n int) []float32 { return make([]float32, n) }
	x := matNode(g, "x", f(12), 3, 4)
	w := matNode(g, "w", f(20), 4, 5)
	v4, v5 := vecNode(g, "v4", f(4)), vecNode(g, "v5", f(5))
	wte, wpe := matNode(g, "wte", f(28), 7, 4), matNode(g, "wpe", f(8), 2, 4)
	wpeWide := matNode(g, "wpeWide", f(10), 2, 5)
	x64 := G.NewMatrix(g, G.Float64, G.WithShape(3, 4), G.WithName("x64"), G.WithValue(tensor.New(tensor.WithShape(3, 4), tensor.WithBacking(make([]float64, 12)))))
	ids23 := NewIDs(1, 3)

	cases := []struct {
		name string
		fn   func() (*G.Node, error)
	}{
		{"embedding nil ids", func() (*G.Node, error) { return Embedding(wte, wpe, nil) }},
		{"embedding empty ids", func() (*G.Node, error) { return Embedding(wte, wpe, NewIDs(0, 2)) }},
		{"embedding T > Tmax", func() (*G.Node, error) { return Embedding(wte, wpe, ids23) }},
		{"embedding widths", func() (*G.Node, error) { return Embedding(wte, wpeWide, NewIDs(1, 2)) }},
		{"embedding vector table", func() (*G.Node, error) { return Embedding(v4, wpe, NewIDs(1, 2)) }},
		{"layernorm gamma", func() (*G.Node, error) { return LayerNorm(x, v5, v4, 1e-5) }},
		{"layernorm nil beta", func() (*G.Node, error) { return LayerNorm(x, v4, nil, 1e-5) }},
		{"layernorm eps", func() (*G.Node, error) { return LayerNorm(x, v4, v4, -1) }},
		{"layernorm float64", func() (*G.Node, error) { return LayerNorm(x64, v4, v4, 1e-5) }},
		{"gelu vector", func() (*G.Node, error) { return GELU(v4) }},
		{"gelu nil", func() (*G.Node, error) { return GELU(nil) }},
		{"linear inner dims", func() (*G.Node, error) { return Linear(x, w, nil, LinearOpts{TransW: true}) }},
		{"linear bias", func() (*G.Node, error) { return Linear(x, w, v4, LinearOpts{}) }},
		{"linear nil weight", func() (*G.Node, error) { return Linear(x, nil, nil, LinearOpts{}) }},
		{"biasadd", func() (*G.Node, error) { return BiasAdd(x, v5) }},
		{"crossentropy rows", func() (*G.Node, error) { return CrossEntropy(x, NewIDs(2, 2)) }},
		{"crossentropy short Data", func() (*G.Node, error) {
			return CrossEntropy(x, &IDs{B: 1, T: 3, Data: make([]int32, 2)})
		}},
	}
	for _, c := range cases {
		n, err := c.fn()
		if err == nil || n != nil {
			t.Errorf("%s: node %v, err %v; want an error", c.name, n, err)
		} else if !errors.Is(err, ErrShape) {
			t.Errorf("%s: err = %v, want ErrShape", c.name, err)
		}
	}
	other := matNode(G.NewGraph(), "other", f(20), 4, 5)
	if n, err := Linear(x, other, nil, LinearOpts{}); err == nil || n != nil {
		t.Errorf("Linear across two graphs: node %v, err %v; want an error", n, err)
	}
	if err := ids23.Set([]int32{1, 2}); !errors.Is(err, ErrShape) {
		t.Errorf("IDs.Set with a short batch: err = %v, want ErrShape", err)
	}
}

// Bad ids and targets, found at run time, fail the run with an error.
func TestRunErrors(t *testing.T) {
	cases := []struct {
		name  string
		spoil func(n *net)
		want  error
	}{
		{"id too large", func(n *net) { n.ids.Data[3] = int32(smallNet.V) }, ErrRange},
		{"negative id", func(n *net) { n.ids.Data[0] = -1 }, ErrRange},
		{"target too large", func(n *net) { n.targets.Data[2] = int32(smallNet.V) }, ErrRange},
		{"target below IgnoreIndex", func(n *net) { n.targets.Data[2] = -2 }, ErrRange},
		{"targets replaced by a shorter slice", func(n *net) { n.targets.Data = n.targets.Data[:3] }, ErrShape},
		{"ids resized", func(n *net) { n.ids.B, n.ids.Data = 1, n.ids.Data[:smallNet.T] }, ErrShape},
	}
	for _, c := range cases {
		n := buildNet(t, newNetData(smallNet, 5), nil)
		c.spoil(n)
		err := UnwrapVMError(n.m.RunAll())
		if !errors.Is(err, c.want) {
			t.Errorf("%s: RunAll err = %v, want %v", c.name, err, c.want)
		}
	}
}
