package tokenizer

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
)

type chatGolden struct {
	Templates map[string]string `json:"templates"`
	Cases     []struct {
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
		AddGenerationPrompt bool               `json:"add_generation_prompt"`
		Rendered            map[string]*string `json:"rendered"`
		IDs                 map[string][]int32 `json:"ids"`
	} `json:"cases"`
}

// TestChatTemplates renders the Llama 3, Qwen 3, Qwen2/ChatML, SmolLM2 and
// Mistral templates with gonja and compares with @huggingface/jinja's output
// (testdata/gen_chat.mjs); a template that raises there must fail here too.
// With the fetched files, the ids of the rendered chats match the reference's.
func TestChatTemplates(t *testing.T) {
	b, err := os.ReadFile("testdata/golden/chat.json")
	if err != nil {
		t.Fatal(err)
	}
	var g chatGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	for ci, c := range g.Cases {
		msgs := make([]Message, len(c.Messages))
		for i, m := range c.Messages {
			msgs[i] = Message{m.Role, m.Content}
		}
		for name, want := range c.Rendered {
			got, err := RenderChatTemplate(g.Templates[name], msgs, c.AddGenerationPrompt, "<s>", "</s>")
			switch {
			case want == nil && err == nil:
				t.Errorf("case %d %s: rendered %q, the reference raises", ci, name, got)
			case want != nil && err != nil:
				t.Errorf("case %d %s: %v", ci, name, err)
			case want != nil && got != *want:
				t.Errorf("case %d %s:\n got %q\nwant %q", ci, name, got, *want)
			}
		}
	}
	for _, name := range []string{"llama3", "qwen3"} {
		t.Run(name, func(t *testing.T) {
			tk := realTokenizer(t, name)
			for ci, c := range g.Cases {
				msgs := make([]Message, len(c.Messages))
				for i, m := range c.Messages {
					msgs[i] = Message{m.Role, m.Content}
				}
				ids, err := tk.EncodeChat(msgs, c.AddGenerationPrompt)
				if err != nil {
					t.Fatalf("case %d: %v", ci, err)
				}
				if !slices.Equal(ids, c.IDs[name]) {
					t.Errorf("case %d:\n got %v\nwant %v", ci, ids, c.IDs[name])
				}
			}
		})
	}
}

func TestNoChatTemplate(t *testing.T) {
	tk := tinyByteLevel(t)
	if _, err := tk.EncodeChat([]Message{{"user", "hi"}}, true); err == nil {
		t.Fatal("no error without a chat template")
	}
	if _, err := RenderChatTemplate("{% for %}", nil, false, "", ""); err == nil {
		t.Fatal("no error for a broken template")
	}
}
