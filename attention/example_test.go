package attention_test

import (
	"fmt"

	"github.com/galleon-ml/galleon/attention"
)

// With all-zero queries every visible key gets the same score, so causal
// attention averages the values seen so far and the log-sum-exp of row i is
// log(i+1).
func Example() {
	const T, D = 4, 2
	q := attention.NewTensor(1, 1, T, D) // zeros
	k := attention.NewTensor(1, 1, T, D)
	v := attention.NewTensor(1, 1, T, D)
	for t := 0; t < T; t++ {
		copy(k.Row(0, 0, t), []float32{float32(t), 1})
		copy(v.Row(0, 0, t), []float32{float32(t), float32(10 * t)})
	}
	o, lse, err := attention.Forward(q, k, v, attention.Options{Causal: true})
	if err != nil {
		panic(err)
	}
	for t := 0; t < T; t++ {
		fmt.Printf("row %d: o = %.2f, lse = %.4f\n", t, o.Row(0, 0, t), lse[t])
	}
	// Output:
	// row 0: o = [0.00 0.00], lse = 0.0000
	// row 1: o = [0.50 5.00], lse = 0.6931
	// row 2: o = [1.00 10.00], lse = 1.0986
	// row 3: o = [1.50 15.00], lse = 1.3863
}

// The model keeps q, k and v in the output of one fused projection,
// [B·T, (H+2·KVH)·D], and wants the attention output as [B·T, H·D]: views
// describe both without copying.
func ExamplePackedQKV() {
	const B, T, H, KVH, D = 2, 3, 4, 2, 8
	qkv := make([]float32, B*T*(H+2*KVH)*D) // the QKV projection's output
	q, k, v, err := attention.PackedQKV(qkv, B, T, H, KVH, D)
	if err != nil {
		panic(err)
	}
	out := make([]float32, B*T*H*D) // input of the output projection
	o, err := attention.PackedHeads(out, B, T, H, D)
	if err != nil {
		panic(err)
	}
	lse := make([]float32, B*H*T)
	if err := attention.ForwardInto(o, lse, q, k, v, attention.Options{Causal: true}); err != nil {
		panic(err)
	}
	fmt.Println("q", q.B, q.H, q.T, q.D, "row stride", q.StrideT)
	fmt.Println("k", k.B, k.H, k.T, k.D, "starts at column", len(qkv)-len(k.Data))
	fmt.Println("o", o.B, o.H, o.T, o.D, "row stride", o.StrideT)
	// Output:
	// q 2 4 3 8 row stride 64
	// k 2 2 3 8 starts at column 32
	// o 2 4 3 8 row stride 32
}

// Decode attends the newest token's query to a KV cache of capacity 16
// holding 5 positions.
func ExampleDecode() {
	const B, H, KVH, Tcap, D = 1, 2, 1, 16, 4
	kc := attention.NewTensor(B, KVH, Tcap, D)
	vc := attention.NewTensor(B, KVH, Tcap, D)
	for t := 0; t < 5; t++ {
		copy(vc.Row(0, 0, t), []float32{float32(t), 0, 0, 1})
	}
	q := attention.NewTensor(B, H, 1, D) // the 5th token's queries (zeros)
	o, err := attention.Decode(q, kc, vc, 5, attention.Options{Causal: true})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%.2f\n", o.Row(0, 1, 0))
	// Output: [2.00 0.00 0.00 1.00]
}
