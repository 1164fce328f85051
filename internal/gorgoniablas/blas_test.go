package gorgoniablas

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// graphResult holds a graph's output and the gradients of its inputs.
type graphResult struct {
	out   []float32
	grads [][]float32
}

// runGraph builds a graph with build, differentiates Sum(out ⊙ R) with
// respect to the inputs and runs it on the given BLAS.
func runGraph(t *testing.T, impl G.BLAS, inputs []*tensor.Dense, build func(g *G.ExprGraph, in []*G.Node) (*G.Node, error)) graphResult {
	t.Helper()
	G.Use(impl)
	defer G.Use(gonum.Implementation{})

	g := G.NewGraph()
	nodes := make([]*G.Node, len(inputs))
	for i, v := range inputs {
		c := v.Clone().(*tensor.Dense)
		nodes[i] = G.NodeFromAny(g, c, G.WithName(string(rune('a'+i))))
	}
	out, err := build(g, nodes)
	if err != nil {
		t.Fatal(err)
	}
	// A fixed, non-uniform upstream gradient so every backward product counts.
	r := tensor.New(tensor.WithShape(out.Shape()...), tensor.WithBacking(randSlice(rand.New(rand.NewPCG(9, 9)), out.Shape().TotalSize())))
	rn := G.NodeFromAny(g, r, G.WithName("r"))
	prod, err := G.HadamardProd(out, rn)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(cost, nodes...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	res := graphResult{out: append([]float32(nil), out.Value().Data().([]float32)...)}
	for _, n := range nodes {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		res.grads = append(res.grads, append([]float32(nil), gv.Data().([]float32)...))
	}
	return res
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func randDense(r *rand.Rand, shape ...int) *tensor.Dense {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(randSlice(r, n)))
}

// close32 compares two float32 results of k-term sums computed in different
// orders: each is within k·eps·Σ|terms| of the exact value, and the terms here
// are products of unit normals, so a bound of k·eps·k·(1+|want|) is generous
// without hiding a wrong element (a real bug is off by O(1)).
func close32(t *testing.T, what string, got, want []float32, k int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	const eps = 1.0 / (1 << 23)
	tol := eps * float64(k) * math.Sqrt(float64(k))
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > tol*(1+math.Abs(float64(want[i]))) || got[i] != got[i] {
			t.Fatalf("%s[%d] = %v, gonum gives %v", what, i, got[i], want[i])
		}
	}
}

// counting wraps BLAS to prove that gorgonia's products reach it.
type counting struct {
	BLAS
	gemm, gemv *int
}

func (c counting) Sger(m, n int, alpha float32, x []float32, incX int, y []float32, incY int, a []float32, lda int) {
	*c.gemv++
	c.BLAS.Sger(m, n, alpha, x, incX, y, incY, a, lda)
}

func (c counting) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int) {
	*c.gemm++
	c.BLAS.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
}

func (c counting) Sgemv(tA blas.Transpose, m, n int, alpha float32, a []float32, lda int, x []float32, incX int, beta float32, y []float32, incY int) {
	*c.gemv++
	c.BLAS.Sgemv(tA, m, n, alpha, a, lda, x, incX, beta, y, incY)
}

func TestGorgoniaOpsMatchGonum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name   string
		inputs []*tensor.Dense
		k      int
		build  func(g *G.ExprGraph, in []*G.Node) (*G.Node, error)
	}{
		{"Mul", []*tensor.Dense{randDense(r, 37, 53), randDense(r, 53, 29)}, 53,
			func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) { return G.Mul(in[0], in[1]) }},
		{"MulTransposedA", []*tensor.Dense{randDense(r, 53, 37), randDense(r, 53, 29)}, 53,
			func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				at, err := G.Transpose(in[0])
				if err != nil {
					return nil, err
				}
				return G.Mul(at, in[1])
			}},
		{"MulTransposedB", []*tensor.Dense{randDense(r, 37, 53), randDense(r, 29, 53)}, 53,
			func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				bt, err := G.Transpose(in[1])
				if err != nil {
					return nil, err
				}
				return G.Mul(in[0], bt)
			}},
		{"MatVec", []*tensor.Dense{randDense(r, 41, 67), randDense(r, 67)}, 67,
			func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) { return G.Mul(in[0], in[1]) }},
		{"BatchedMatMul", []*tensor.Dense{randDense(r, 3, 17, 31), randDense(r, 3, 31, 23)}, 31,
			func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) { return G.BatchedMatMul(in[0], in[1]) }},
		{"BatchedMatMulTransB", []*tensor.Dense{randDense(r, 4, 19, 16), randDense(r, 4, 21, 16)}, 21,
			func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				return G.BatchedMatMul(in[0], in[1], false, true)
			}},
		{"Large", []*tensor.Dense{randDense(r, 130, 257), randDense(r, 257, 96)}, 257,
			func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) { return G.Mul(in[0], in[1]) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := runGraph(t, gonum.Implementation{}, c.inputs, c.build)
			var gemm, gemv int
			got := runGraph(t, counting{gemm: &gemm, gemv: &gemv}, c.inputs, c.build)
			if gemm+gemv < 3 { // forward and both gradients
				t.Fatalf("only %d products reached the kernels", gemm+gemv)
			}
			close32(t, "output", got.out, want.out, c.k)
			for i := range want.grads {
				close32(t, "gradient "+string(rune('a'+i)), got.grads[i], want.grads[i], 300)
			}
		})
	}
}

func TestSgemvMatchesGonum(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var ours BLAS
	var ref gonum.Implementation
	for _, tr := range []bool{false, true} {
		for _, sz := range [][2]int{{1, 1}, {7, 5}, {64, 33}, {300, 129}} {
			m, n := sz[0], sz[1]
			lda := n + 3
			a := randSlice(r, m*lda)
			xl, yl := n, m
			tA := blas.NoTrans
			if tr {
				xl, yl = m, n
				tA = blas.Trans
			}
			x := randSlice(r, xl)
			y0 := randSlice(r, yl)
			for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-1.25, 0.75}} {
				got := append([]float32(nil), y0...)
				want := append([]float32(nil), y0...)
				ours.Sgemv(tA, m, n, ab[0], a, lda, x, 1, ab[1], got, 1)
				ref.Sgemv(tA, m, n, ab[0], a, lda, x, 1, ab[1], want, 1)
				close32(t, "Sgemv", got, want, max(m, n))
			}
			// Strided vectors go through gonum unchanged.
			xs := randSlice(r, 2*xl)
			ys := randSlice(r, 3*yl)
			want := append([]float32(nil), ys...)
			ours.Sgemv(tA, m, n, 1, a, lda, xs, 2, 1, ys, 3)
			ref.Sgemv(tA, m, n, 1, a, lda, xs, 2, 1, want, 3)
			close32(t, "Sgemv strided", ys, want, max(m, n))
		}
	}
}

func TestSgerMatchesGonum(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, sz := range [][2]int{{1, 1}, {7, 5}, {64, 33}, {130, 257}} {
		m, n := sz[0], sz[1]
		lda := n + 2
		x, y := randSlice(r, m), randSlice(r, n)
		a := randSlice(r, m*lda)
		want := append([]float32(nil), a...)
		BLAS{}.Sger(m, n, -0.75, x, 1, y, 1, a, lda)
		gonum.Implementation{}.Sger(m, n, -0.75, x, 1, y, 1, want, lda)
		close32(t, "Sger", a, want, 4) // a + alpha·x·y with O(1) terms: a few ulp of cancellation
		xs := randSlice(r, 2*m)
		BLAS{}.Sger(m, n, 1, xs, 2, y, 1, a, lda)
		gonum.Implementation{}.Sger(m, n, 1, xs, 2, y, 1, want, lda)
		close32(t, "Sger strided", a, want, 4)
	}
}

func TestInstall(t *testing.T) {
	defer G.Use(gonum.Implementation{})
	Install()
	Install()
	if _, ok := G.WhichBLAS().(BLAS); !ok {
		t.Fatalf("gorgonia uses %T after Install", G.WhichBLAS())
	}
	if _, ok := tensor.WhichBLAS().(BLAS); !ok {
		t.Fatalf("tensor uses %T after Install", tensor.WhichBLAS())
	}
}
