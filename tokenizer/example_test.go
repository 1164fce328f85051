package tokenizer_test

import (
	"fmt"

	"github.com/galleon-ml/galleon/tokenizer"
)

// A tiny byte-level BPE file in the layout of GPT-2's tokenizer.json: the
// vocabulary holds the byte characters it needs, two merges and an added
// end-of-text token. Real files are read with tokenizer.Load(dir).
const tinyJSON = `{
  "added_tokens": [{"id": 9, "content": "<|endoftext|>", "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}]},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"h": 0, "i": 1, "Ġ": 2, "t": 3, "hi": 4, "Ġt": 5, "!": 6},
            "merges": ["h i", "Ġ t"]}
}`

func Example() {
	tk, err := tokenizer.FromJSON([]byte(tinyJSON), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ids := tk.Encode("hi thi!<|endoftext|>")
	fmt.Println(ids)
	text, _ := tk.Decode(ids)
	fmt.Printf("%q\n", text)
	fmt.Println(tk.EncodeSpecial("hi"))

	// Streaming: text comes out as complete characters.
	d := tk.NewDecoder()
	for _, id := range ids[:3] {
		s, _ := d.Add(id)
		fmt.Printf("%q ", s)
	}
	fmt.Println()
	// Output:
	// [4 5 4 6 9]
	// "hi thi!<|endoftext|>"
	// [4 9]
	// "hi" " t" "hi"
}
