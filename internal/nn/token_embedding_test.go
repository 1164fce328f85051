package nn

import (
	"errors"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TokenEmbedding's forward gathers rows and its gradient scatter-adds
// them, repeated ids summing, on odd sizes.
func TestTokenEmbedding(t *testing.T) {
	const V, C, B, T = 7, 5, 2, 3
	wte := make([]float32, V*C)
	for i := range wte {
		wte[i] = float32(i%11) - 4.5
	}
	ids := []int32{3, 0, 3, 6, 6, 6}
	R := make([]float32, B*T*C)
	for i := range R {
		R[i] = float32(i%7) * 0.25
	}
	g := G.NewGraph()
	wn := G.NodeFromAny(g, tensor.New(tensor.WithShape(V, C), tensor.WithBacking(append([]float32(nil), wte...))), G.WithName("wte"))
	rn := G.NodeFromAny(g, tensor.New(tensor.WithShape(B*T, C), tensor.WithBacking(R)), G.WithName("r"))
	in := NewIDs(B, T)
	if err := in.Set(ids); err != nil {
		t.Fatal(err)
	}
	out, err := TokenEmbedding(wn, in)
	if err != nil {
		t.Fatal(err)
	}
	loss := G.Must(G.Sum(G.Must(G.HadamardProd(out, rn))))
	grads, err := G.Grad(loss, wn)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := out.Value().Data().([]float32)
	want := make([]float32, B*T*C)
	if err := TokenEmbeddingForward(want, wte, ids, C); err != nil {
		t.Fatal(err)
	}
	dwant := make([]float32, V*C)
	for r, id := range ids {
		for k := 0; k < C; k++ {
			if want[r*C+k] != wte[int(id)*C+k] || got[r*C+k] != want[r*C+k] {
				t.Fatalf("row %d col %d: graph %v kernel %v table %v", r, k, got[r*C+k], want[r*C+k], wte[int(id)*C+k])
			}
			dwant[int(id)*C+k] += R[r*C+k]
		}
	}
	dgot := grads[0].Value().Data().([]float32)
	for i := range dwant {
		if d := dgot[i] - dwant[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("dwte[%d] = %v, want %v", i, dgot[i], dwant[i])
		}
	}
	if err := TokenEmbeddingForward(want, wte, []int32{0, 7}, C); !errors.Is(err, ErrShape) {
		t.Errorf("short out: %v", err)
	}
	if err := TokenEmbeddingForward(want[:2*C], wte, []int32{0, 7}, C); !errors.Is(err, ErrRange) {
		t.Errorf("id 7 of 7: %v", err)
	}
	if _, err := TokenEmbedding(wn, NewIDs(0, 3)); err == nil {
		t.Error("empty ids accepted")
	}
}
