package tokenizer

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// Message is one turn of a chat: a role ("system", "user", "assistant", …)
// and its text.
type Message struct {
	// Role is who speaks: "system", "user", "assistant" or "tool".
	Role string
	// Content is the text of the turn.
	Content string
}

// ErrNoChatTemplate is returned (wrapped) when tokenizer_config.json has no
// chat_template.
var ErrNoChatTemplate = errors.New("no chat template")

// ChatTemplate returns tokenizer_config.json's chat_template ("" if none).
func (t *Tokenizer) ChatTemplate() string { return t.chatTemplate }

// ApplyChatTemplate renders messages with the file's chat template, as
// transformers' apply_chat_template(tokenize=False) does. addGenerationPrompt
// appends the opening of the assistant's turn.
func (t *Tokenizer) ApplyChatTemplate(messages []Message, addGenerationPrompt bool) (string, error) {
	if t.chatTemplate == "" {
		return "", fmt.Errorf("tokenizer: %w", ErrNoChatTemplate)
	}
	return RenderChatTemplate(t.chatTemplate, messages, addGenerationPrompt, t.bosText, t.eosText)
}

// EncodeChat renders messages with the chat template and encodes the result
// without adding special tokens (the template writes them).
func (t *Tokenizer) EncodeChat(messages []Message, addGenerationPrompt bool) ([]int32, error) {
	s, err := t.ApplyChatTemplate(messages, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	return t.Encode(s), nil
}

// RenderChatTemplate renders a Jinja chat template with gonja, configured as
// transformers configures Jinja (trim_blocks, lstrip_blocks), with messages,
// add_generation_prompt, bos_token, eos_token and raise_exception defined.
// A template that raises, or uses Jinja gonja does not support, is an error.
func RenderChatTemplate(template string, messages []Message, addGenerationPrompt bool, bosToken, eosToken string) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("tokenizer: chat template: %v", r)
		}
	}()
	cfg := config.New()
	cfg.TrimBlocks = true
	cfg.LeftStripBlocks = true
	loader, err := loaders.NewShiftedLoader("chat_template", bytes.NewReader([]byte(template)), gonja.DefaultLoader)
	if err != nil {
		return "", fmt.Errorf("tokenizer: chat template: %w", err)
	}
	tpl, err := exec.NewTemplate("chat_template", cfg, loader, gonja.DefaultEnvironment)
	if err != nil {
		return "", fmt.Errorf("tokenizer: chat template: %w", err)
	}
	msgs := make([]map[string]any, len(messages))
	for i, m := range messages {
		msgs[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	var raised error
	ctx := exec.NewContext(map[string]any{
		"messages":              msgs,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             bosToken,
		"eos_token":             eosToken,
		"raise_exception": func(msg string) string {
			raised = errors.New(msg)
			return ""
		},
	})
	s, err := tpl.ExecuteToString(ctx)
	if raised != nil {
		return "", fmt.Errorf("tokenizer: chat template raised: %w", raised)
	}
	if err != nil {
		return "", fmt.Errorf("tokenizer: chat template: %w", err)
	}
	return s, nil
}
