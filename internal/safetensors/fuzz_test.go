package safetensors

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// checkReadConsistent is the fuzz property: Read never panics, rejects with
// ErrCorrupt, and whatever it accepts writes back to a file that reads as
// the same tensors and re-writes to the same bytes.
func checkReadConsistent(t *testing.T, data []byte) {
	t.Helper()
	f, err := Read(bytes.NewReader(data), int64(len(data)), ReadOptions{MaxHeaderSize: 1 << 20})
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error without ErrCorrupt: %v", err)
		}
		return
	}
	var b1 bytes.Buffer
	if err := Write(&b1, f.Tensors, f.Metadata); err != nil {
		t.Fatalf("accepted file does not re-serialize: %v", err)
	}
	g, err := Read(bytes.NewReader(b1.Bytes()), int64(b1.Len()), ReadOptions{})
	if err != nil {
		t.Fatalf("re-serialized file rejected: %v", err)
	}
	sameTensors(t, g.Tensors, f.Tensors)
	if !reflect.DeepEqual(g.Metadata, f.Metadata) {
		t.Fatalf("metadata %v became %v", f.Metadata, g.Metadata)
	}
	var b2 bytes.Buffer
	if err := Write(&b2, g.Tensors, g.Metadata); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Fatal("serialization is not a fixed point")
	}
}

func FuzzRead(f *testing.F) {
	f.Add(mustWrite(f, sampleTensors(), map[string]string{"format": "pt"}))
	f.Add(mustWrite(f, []Tensor{F32Tensor("a", []int64{2}, []float32{1, -2}), I8Tensor("b", []int64{3}, []int8{1, -1, 127})}, nil))
	f.Add(mustWrite(f, nil, map[string]string{"k": "v"}))
	f.Add(mustWrite(f, nil, nil))
	for _, b := range corruptFiles() {
		f.Add(b)
	}
	f.Fuzz(checkReadConsistent)
}
