package data_test

import (
	"fmt"
	"strings"

	"github.com/galleon-ml/galleon/data"
)

// runes encodes text as its code points.
type runes struct{}

func (runes) Encode(s string) []int32 { return []int32(s) }

func Example() {
	src := `{"prompt":"2+2=","completion":"4"}` + "\n" + `{"prompt":"3+3=","completion":"6"}`
	ex, err := data.ReadJSONL(strings.NewReader(src), data.Options{Encoder: runes{}, BOS: -1, EOS: 0})
	if err != nil {
		fmt.Println(err)
		return
	}
	ws, err := data.Pad(ex, 6, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ws[0].Targets, ws[0].Trained())
	// Output: [-1 -1 -1 52 0 -1] 2
}
