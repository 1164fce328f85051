package data

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/tokenizer"
)

// TestRealTemplates renders with the tokenizer package's Jinja renderer and
// the chat templates its tests carry, as the galleon command does.
func TestRealTemplates(t *testing.T) {
	raw, err := os.ReadFile("../tokenizer/testdata/chat_templates.json")
	if err != nil {
		t.Fatal(err)
	}
	var templates map[string]string
	if err := json.Unmarshal(raw, &templates); err != nil {
		t.Fatal(err)
	}
	ms := []Message{{"user", "what is go"}, {"assistant", "A LANGUAGE"}, {"user", "and gorgonia"}, {"assistant", "A LIBRARY"}}
	for name, tpl := range templates {
		render := func(ms []Message, gen bool) (string, error) {
			tm := make([]tokenizer.Message, len(ms))
			for i, m := range ms {
				tm[i] = tokenizer.Message{Role: m.Role, Content: m.Content}
			}
			return tokenizer.RenderChatTemplate(tpl, tm, gen, "<s>", "</s>")
		}
		segs, err := TemplateRenderer(render).Render(ms)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var all, trained string
		for _, s := range segs {
			all += s.Text
			if s.Train {
				trained += s.Text
			}
		}
		if want, _ := render(ms, false); all != want {
			t.Errorf("%s: segments join to %q, want %q", name, all, want)
		}
		if !strings.Contains(trained, "A LANGUAGE") || !strings.Contains(trained, "A LIBRARY") || strings.Contains(trained, "go") {
			t.Errorf("%s: trained text %q", name, trained)
		}
	}
}
