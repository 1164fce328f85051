package quant_test

import (
	"fmt"

	"github.com/galleon-ml/galleon/quant"
)

// Quantize a weight per output channel and run it as an int8 layer with
// per-token activation quantization.
func Example() {
	// A 3→2 layer in the model's [in, out] layout.
	w := []float32{
		0.5, -1,
		0.25, 2,
		-0.5, 0.125,
	}
	bias := []float32{0.1, -0.1}
	l, err := quant.NewLinear(w, bias, 3, 2, quant.LinearOptions{Act: quant.ActDynamic})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("int8 weight [out, in]:", l.Weight.Data)
	x := []float32{1, 2, 3} // one token
	y := make([]float32, 2)
	if err := l.Forward(y, x, 1); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("int8: %.3f %.3f (float32: %.3f %.3f)\n", y[0], y[1], 0.5+0.5-1.5+0.1, -1+4+0.375-0.1)
	// Output:
	// int8 weight [out, in]: [127 64 -127 -64 127 8]
	// int8: -0.398 3.294 (float32: -0.400 3.275)
}
