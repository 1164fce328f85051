package nn

import (
	"math"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
)

// A small network made of every op, the shape of a one-layer GPT without
// attention: embedding → LayerNorm → linear → GELU → tied output head
// (x·wteᵀ) → cross-entropy.

type netSizes struct{ B, T, V, C, H, Tmax int }

type netData struct {
	netSizes
	wte, wpe, gamma, beta, w1, b1 []float32
	ids, targets                  []int32
}

func newNetData(s netSizes, seed uint64) *netData {
	r := newRand(seed)
	d := &netData{netSizes: s}
	d.wte = randn32(r, s.V*s.C, 0.5)
	d.wpe = randn32(r, s.Tmax*s.C, 0.5)
	d.gamma = randn32(r, s.C, 0.3)
	for i := range d.gamma {
		d.gamma[i]++
	}
	d.beta = randn32(r, s.C, 0.3)
	d.w1 = randn32(r, s.C*s.H, 1/math.Sqrt(float64(s.C)))
	d.b1 = randn32(r, s.H, 0.3)
	d.ids = randIDs(r, s.B*s.T, s.V)
	d.targets = randIDs(r, s.B*s.T, s.V)
	d.targets[1] = IgnoreIndex
	return d
}

// refNet is the float64 loss of the network.
func refNet(s netSizes, wte, wpe, gamma, beta, w1, b1 []float64, ids, targets []int32) float64 {
	x := refEmbedding(wte, wpe, ids, s.T, s.C)
	h := refLayerNorm(x, gamma, beta, s.C, DefaultEps)
	a := refGELU(refLinear(h, w1, b1, s.C, s.H, false))
	logits := refLinear(a, wte, nil, s.H, s.V, true)
	return refCrossEntropy(logits, targets, s.V)
}

type net struct {
	g                             *G.ExprGraph
	wte, wpe, gamma, beta, w1, b1 *G.Node
	ids, targets                  *IDs
	loss                          *G.Node
	m                             G.VM
}

func (n *net) params() []*G.Node { return []*G.Node{n.wte, n.wpe, n.gamma, n.beta, n.w1, n.b1} }

// buildNet builds the network on d's weights (shared memory, as the model's
// replicas do) and differentiates the loss with respect to the parameters
// that trainable accepts (all when nil).
func buildNet(tb testing.TB, d *netData, trainable func(name string) bool) *net {
	tb.Helper()
	s := d.netSizes
	n := &net{g: G.NewGraph(), ids: NewIDs(s.B, s.T), targets: NewIDs(s.B, s.T)}
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(n.ids.Set(d.ids))
	must(n.targets.Set(d.targets))
	n.wte = matNode(n.g, "wte", d.wte, s.V, s.C)
	n.wpe = matNode(n.g, "wpe", d.wpe, s.Tmax, s.C)
	n.gamma = vecNode(n.g, "gamma", d.gamma)
	n.beta = vecNode(n.g, "beta", d.beta)
	n.w1 = matNode(n.g, "w1", d.w1, s.C, s.H)
	n.b1 = vecNode(n.g, "b1", d.b1)
	x, err := Embedding(n.wte, n.wpe, n.ids)
	must(err)
	h, err := LayerNorm(x, n.gamma, n.beta, DefaultEps)
	must(err)
	a, err := Linear(h, n.w1, n.b1, LinearOpts{})
	must(err)
	a, err = GELU(a)
	must(err)
	logits, err := Linear(a, n.wte, nil, LinearOpts{TransW: true})
	must(err)
	n.loss, err = CrossEntropy(logits, n.targets)
	must(err)
	var wrt []*G.Node
	for _, p := range n.params() {
		if trainable == nil || trainable(p.Name()) {
			wrt = append(wrt, p)
		}
	}
	_, err = G.Grad(n.loss, wrt...)
	must(err)
	n.m = G.NewTapeMachine(n.g, G.BindDualValues(wrt...))
	return n
}

func (n *net) step(tb testing.TB) float32 {
	tb.Helper()
	if err := n.m.RunAll(); err != nil {
		tb.Fatal(err)
	}
	n.m.Reset()
	return scalarOf(n.loss)
}

// H is the hidden linear's width; the tied head needs H == C.
var smallNet = netSizes{B: 2, T: 5, V: 11, C: 8, H: 8, Tmax: 6}

func TestComposedNetworkMatchesReference(t *testing.T) {
	d := newNetData(smallNet, 1)
	n := buildNet(t, d, nil)
	loss := n.step(t)

	s := d.netSizes
	wte, wpe, gamma, beta, w1, b1 := to64(d.wte), to64(d.wpe), to64(d.gamma), to64(d.beta), to64(d.w1), to64(d.b1)
	ref := func() float64 { return refNet(s, wte, wpe, gamma, beta, w1, b1, d.ids, d.targets) }
	assertClose(t, "loss", []float32{loss}, []float64{ref()}, 1e-5, 1e-6)
	for _, c := range []struct {
		node *G.Node
		ref  []float64
	}{{n.wte, wte}, {n.wpe, wpe}, {n.gamma, gamma}, {n.beta, beta}, {n.w1, w1}, {n.b1, b1}} {
		// wte collects both the embedding's scatter and the tied head's
		// product: gorgonia sums the two gradient nodes.
		assertClose(t, "d"+c.node.Name(), gradOf(t, c.node), numGrad(ref, c.ref), gradRtol, gradAtol)
	}
}

// TestDeterminismAndAccumulation: a run is bit-identical to another run of
// the same graph and of a second graph, and the TapeMachine adds each run's
// gradients into the dual values (vm.Reset does not clear them), so two runs
// without zeroing hold exactly twice one run's gradients.
func TestDeterminismAndAccumulation(t *testing.T) {
	d := newNetData(smallNet, 2)
	a, b := buildNet(t, d, nil), buildNet(t, d, nil)
	la, lb := a.step(t), b.step(t)
	if math.Float32bits(la) != math.Float32bits(lb) {
		t.Fatalf("two graphs: loss %v vs %v", la, lb)
	}
	first := make([][]float32, 0, 6)
	for i, p := range a.params() {
		ga, gb := gradOf(t, p), gradOf(t, b.params()[i])
		if !slices.Equal(ga, gb) {
			t.Errorf("two graphs: d%s differs", p.Name())
		}
		first = append(first, ga)
	}
	if l2 := a.step(t); math.Float32bits(l2) != math.Float32bits(la) {
		t.Fatalf("second run: loss %v vs %v", l2, la)
	}
	for i, p := range a.params() {
		g2 := gradOf(t, p)
		for j := range g2 {
			if g2[j] != 2*first[i][j] {
				t.Fatalf("after two runs d%s[%d] = %v, want 2×%v", p.Name(), j, g2[j], first[i][j])
			}
		}
	}
	zeroGrad(t, a.params()...)
	a.step(t)
	for i, p := range a.params() {
		if !slices.Equal(gradOf(t, p), first[i]) {
			t.Errorf("after zeroing, d%s differs from the first run", p.Name())
		}
	}
}

// TestFrozenWeightsSkipGradientWork builds the network twice: with w1 (and
// wpe, LayerNorm) trainable, and with them frozen as LoRA freezes its base.
// The frozen graph must run no dW product for w1 (only the tied head's, for
// wte) and still give the trainable parameters the same gradients.
func TestFrozenWeightsSkipGradientWork(t *testing.T) {
	d := newNetData(smallNet, 3)
	full := buildNet(t, d, nil)
	frozenNames := map[string]bool{"w1": true, "wpe": true, "gamma": true, "beta": true}
	frozen := buildNet(t, d, func(name string) bool { return !frozenNames[name] })

	before := weightGradProducts.Load()
	full.step(t)
	if got := weightGradProducts.Load() - before; got != 2 {
		t.Errorf("all trainable: %d weight-gradient products per run, want 2 (w1, wte)", got)
	}
	before = weightGradProducts.Load()
	frozen.step(t)
	if got := weightGradProducts.Load() - before; got != 1 {
		t.Errorf("w1 frozen: %d weight-gradient products per run, want 1 (wte)", got)
	}
	for _, p := range []*G.Node{frozen.w1, frozen.wpe, frozen.gamma, frozen.beta} {
		if p.Deriv() != nil {
			t.Errorf("frozen %s has a derivative node", p.Name())
		}
	}
	for _, pair := range [][2]*G.Node{{full.wte, frozen.wte}, {full.b1, frozen.b1}} {
		if !slices.Equal(gradOf(t, pair[0]), gradOf(t, pair[1])) {
			t.Errorf("d%s differs between the full and the frozen graph", pair[0].Name())
		}
	}

	// Exactly the backward ops of frozen inputs skip their work. LayerNorm's
	// dx still runs: wte trains through the embedding below it.
	var skipped, computed []string
	for _, node := range frozen.g.AllNodes() {
		if op, ok := node.Op().(*gradOp); ok {
			if op.needed() {
				computed = append(computed, op.name)
			} else {
				skipped = append(skipped, op.name)
			}
		}
	}
	slices.Sort(skipped)
	slices.Sort(computed)
	wantSkipped := []string{"EmbeddingGradWpe", "LayerNormGradBeta", "LayerNormGradGamma", "LinearGradW"}
	if !slices.Equal(skipped, wantSkipped) {
		t.Errorf("skipped backward ops %v, want %v", skipped, wantSkipped)
	}
	t.Logf("computed backward ops: %v", computed)
}

// TestTrainingSubgraphDropsFrozenGradients: compiled from TrainingSubgraph,
// the frozen graph's program holds no backward op for a frozen input at all,
// and computes the same loss and gradients as the whole graph.
func TestTrainingSubgraphDropsFrozenGradients(t *testing.T) {
	d := newNetData(smallNet, 4)
	frozenNames := map[string]bool{"w1": true, "wpe": true, "gamma": true, "beta": true}
	trainable := func(name string) bool { return !frozenNames[name] }
	whole := buildNet(t, d, trainable)
	pruned := buildNet(t, d, trainable)
	sub, err := TrainingSubgraph([]*G.Node{pruned.loss}, []*G.Node{pruned.wte, pruned.b1})
	if err != nil {
		t.Fatal(err)
	}
	pruned.m = G.NewTapeMachine(sub, G.BindDualValues(pruned.wte, pruned.b1))

	if lw, lp := whole.step(t), pruned.step(t); lw != lp {
		t.Errorf("loss %v (whole graph) vs %v (subgraph)", lw, lp)
	}
	for _, pair := range [][2]*G.Node{{whole.wte, pruned.wte}, {whole.b1, pruned.b1}} {
		if !slices.Equal(gradOf(t, pair[0]), gradOf(t, pair[1])) {
			t.Errorf("d%s differs between the whole graph and the subgraph", pair[0].Name())
		}
	}
	dead := 0
	for _, node := range sub.AllNodes() {
		if op, ok := node.Op().(*gradOp); ok && !op.needed() {
			t.Errorf("subgraph keeps %s, the gradient of a frozen input", op.name)
		}
	}
	for _, node := range whole.g.AllNodes() {
		if op, ok := node.Op().(*gradOp); ok && !op.needed() {
			dead++
		}
	}
	t.Logf("whole graph: %d nodes, %d of them dead backward ops; subgraph: %d nodes", len(whole.g.AllNodes()), dead, len(sub.AllNodes()))

	if _, err := TrainingSubgraph([]*G.Node{pruned.loss}, []*G.Node{pruned.w1}); err == nil {
		t.Error("TrainingSubgraph accepted a frozen node as wrt")
	}
}

// TestDeterminismAtTrainingSize repeats the two-graph comparison at the tiny
// preset's sizes, where Sgemm and the element-wise loops split across cores.
func TestDeterminismAtTrainingSize(t *testing.T) {
	s := netSizes{B: 8, T: 64, V: 256, C: 128, H: 128, Tmax: 64}
	d := newNetData(s, 12)
	a, b := buildNet(t, d, nil), buildNet(t, d, nil)
	la, lb := a.step(t), b.step(t)
	if math.Float32bits(la) != math.Float32bits(lb) {
		t.Fatalf("loss %v vs %v", la, lb)
	}
	zeroGrad(t, a.params()...)
	if l := a.step(t); math.Float32bits(l) != math.Float32bits(la) {
		t.Fatalf("rerun: loss %v vs %v", l, la)
	}
	for i, p := range a.params() {
		if !slices.Equal(gradOf(t, p), gradOf(t, b.params()[i])) {
			t.Errorf("d%s differs between runs", p.Name())
		}
	}
}

// TestConcurrentReplicas runs two graphs on the same weight memory in two
// goroutines, as data-parallel workers do: under -race this checks that the
// ops share no mutable state across graphs, and both get the serial result.
func TestConcurrentReplicas(t *testing.T) {
	s := netSizes{B: 4, T: 16, V: 64, C: 32, H: 32, Tmax: 16}
	d := newNetData(s, 13)
	ref := buildNet(t, d, nil)
	want := ref.step(t)
	nets := []*net{buildNet(t, d, nil), buildNet(t, d, nil)}
	done := make(chan float32, len(nets))
	for _, n := range nets {
		go func() {
			var l float32
			for range 5 {
				if err := n.m.RunAll(); err != nil {
					t.Error(err)
				}
				n.m.Reset()
				l = scalarOf(n.loss)
			}
			done <- l
		}()
	}
	for range nets {
		if l := <-done; l != want {
			t.Errorf("concurrent loss %v, want %v", l, want)
		}
	}
}
