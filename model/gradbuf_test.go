package model

import "testing"

func TestSetGradBufferMovesTheGradients(t *testing.T) {
	m := testModel(t, nil)
	r, err := m.NewReplica(2, m.Config.SeqLen)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ids := make([]int32, 2*m.Config.SeqLen)
	for i := range ids {
		ids[i] = int32(syntheticText(len(ids) + 1)[i])
	}
	if _, err := r.ForwardBackward(ids, ids, 1); err != nil {
		t.Fatal(err)
	}
	want := append([]float32(nil), r.Grad...)
	if err := r.SetGradBuffer(make([]float32, len(r.Grad)-1)); err == nil {
		t.Fatal("a buffer of the wrong length was accepted")
	}
	buf := make([]float32, len(r.Grad))
	if err := r.SetGradBuffer(buf); err != nil {
		t.Fatal(err)
	}
	if &r.Grad[0] != &buf[0] {
		t.Fatal("Grad is not the new buffer")
	}
	// The copied gradients, then a second run adding the same again.
	if _, err := r.ForwardBackward(ids, ids, 1); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if buf[i] != want[i]+want[i] {
			t.Fatalf("grad[%d] = %v, want %v", i, buf[i], 2*want[i])
		}
	}
}
