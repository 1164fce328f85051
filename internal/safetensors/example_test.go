package safetensors_test

import (
	"bytes"
	"fmt"

	"github.com/galleon-ml/galleon/internal/safetensors"
)

func Example() {
	var buf bytes.Buffer
	tensors := []safetensors.Tensor{
		safetensors.F32Tensor("transformer.ln_f.weight", []int64{3}, []float32{1, 0.5, -2}),
		safetensors.I8Tensor("transformer.h.0.mlp.c_fc.qweight", []int64{2, 2}, []int8{-127, 3, 0, 127}),
	}
	if err := safetensors.Write(&buf, tensors, map[string]string{"format": "pt"}); err != nil {
		fmt.Println(err)
		return
	}

	f, err := safetensors.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()), safetensors.ReadOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range f.Tensors {
		fmt.Println(t.Name, t.DType, t.Shape)
	}
	w, _ := f.Tensor("transformer.ln_f.weight")
	values, _ := w.Float32s()
	fmt.Println(values, f.Metadata["format"])

	// A hostile file is an error, never a panic or a huge allocation.
	_, err = safetensors.Read(bytes.NewReader([]byte("\xff\xff\xff\xff\xff\xff\xff\x7f{}")), 10, safetensors.ReadOptions{})
	fmt.Println(err)
	// Output:
	// transformer.ln_f.weight F32 [3]
	// transformer.h.0.mlp.c_fc.qweight I8 [2 2]
	// [1 0.5 -2] pt
	// safetensors: header length 9223372036854775807 exceeds the limit 16777216: corrupt safetensors file
}
