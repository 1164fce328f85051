package main

// Test fixtures shared by the subcommands' tests: tiny random Hugging Face
// model directories at real tokenizers' vocabularies, with the real
// tokenizer files that tokenizer/testdata/fetch.sh puts under
// $GALLEON_TOKENIZER_DATA.

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
)

// TestMain runs the test binary as the galleon command itself when
// GALLEON_TEST_MAIN=1, so tests can execute it (execGalleon) with real
// pipes as stdin and stdout, signals and exit statuses.
func TestMain(m *testing.M) {
	if os.Getenv("GALLEON_TEST_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// execGalleon runs galleon args in a child process with stdin as its
// standard input (a pipe) and returns its exit status, stdout and stderr.
func execGalleon(t testing.TB, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "GALLEON_TEST_MAIN=1")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, out.String(), errb.String()
}

// tokenizerData returns the directory of one fetched tokenizer ("llama2",
// "gpt2", …). Outside CI a missing file skips the test (run
// tokenizer/testdata/fetch.sh); in CI (CI=true) it fails.
func tokenizerData(t testing.TB, name string) string {
	t.Helper()
	root := os.Getenv("GALLEON_TOKENIZER_DATA")
	if root == "" {
		if home, err := os.UserHomeDir(); err == nil {
			root = filepath.Join(home, ".cache", "galleon", "tokenizer-data")
		}
	}
	dir := filepath.Join(root, name)
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tokenizer data %s missing in CI: %v", name, err)
		}
		t.Skipf("tokenizer data %s missing (run tokenizer/testdata/fetch.sh): %v", name, err)
	}
	return dir
}

// llamaChatTemplate is a Llama 2 style chat template with a system turn:
// it writes the BOS and EOS tokens itself, as Llama 2's does.
const llamaChatTemplate = "{{ bos_token }}{% for message in messages %}" +
	"{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}" +
	"{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
	"{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"

// tinyLlamaConfig is a small Llama (2 layers, width 64, 4 query and 2
// key/value heads, untied head) at the Llama 2 tokenizer's 32,000 tokens.
func tinyLlamaConfig() model.Config {
	return model.Config{Family: model.FamilyLlama, ModelType: "llama", Vocab: 32000, DModel: 64, Layers: 2, Heads: 4, KVHeads: 2,
		SeqLen: 256, Intermediate: 96, LayerNormEps: 1e-5, RopeTheta: 1e4, Attention: model.AttentionFlash}
}

// tinyLlamaDir writes a random tiny Llama (tinyLlamaConfig, seed 1) as a
// Hugging Face directory with the Llama 2 tokenizer (tokenizer.json and a
// tokenizer_config.json given llamaChatTemplate) and eos_token_id 2 in
// config.json, and returns the directory and the model.
func tinyLlamaDir(t testing.TB) (string, *model.Model) {
	t.Helper()
	return tinyLlamaDirDType(t, "float32")
}

// tinyLlamaDirDType is tinyLlamaDir with the weights stored in dtype
// ("float32" or "bfloat16", as real Llama checkpoints ship); the returned
// model holds them widened to float32.
func tinyLlamaDirDType(t testing.TB, dtype string) (string, *model.Model) {
	t.Helper()
	tk := tokenizerData(t, "llama2")
	m, err := model.New(tinyLlamaConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "llama")
	if err := m.SavePretrained(dir, model.WithDType(dtype)); err != nil {
		t.Fatal(err)
	}
	if dtype != "float32" {
		if m, err = model.LoadPretrained(dir); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, filepath.Join(tk, "tokenizer.json"), filepath.Join(dir, "tokenizer.json"))
	copyFile(t, filepath.Join(tk, "tokenizer_config.json"), filepath.Join(dir, "tokenizer_config.json"))
	setJSON(t, filepath.Join(dir, "tokenizer_config.json"), "chat_template", llamaChatTemplate)
	setJSON(t, filepath.Join(dir, "config.json"), "eos_token_id", 2)
	setJSON(t, filepath.Join(dir, "config.json"), "bos_token_id", 1)
	return dir, m
}

// tinyGPT2Dir writes a random tiny GPT-2 (2 layers, width 32) at GPT-2's
// 50,257 tokens as a Hugging Face directory with the GPT-2 tokenizer (no
// chat template), and returns the directory and the model.
func tinyGPT2Dir(t testing.TB) (string, *model.Model) {
	t.Helper()
	tk := tokenizerData(t, "gpt2")
	cfg := model.Config{Family: model.FamilyGPT2, ModelType: "gpt2", Vocab: 50257, DModel: 32, Layers: 2, Heads: 2, KVHeads: 2,
		SeqLen: 128, MLPRatio: 4, TiedEmbeddings: true, LayerNormEps: 1e-5, Attention: model.AttentionFlash}
	m, err := model.New(cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "gpt2")
	if err := m.SavePretrained(dir); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(tk, "tokenizer.json"), filepath.Join(dir, "tokenizer.json"))
	copyFile(t, filepath.Join(tk, "tokenizer_config.json"), filepath.Join(dir, "tokenizer_config.json"))
	setJSON(t, filepath.Join(dir, "config.json"), "eos_token_id", 50256)
	return dir, m
}

// writeAdapter applies a LoRA adapter (r 4, alpha 8, on q_proj and
// v_proj) to m, fills its A and B with fixed nonzero values, so it changes
// the model, and saves it in PEFT's format; it returns the directory. m
// keeps the adapter installed.
func writeAdapter(t testing.TB, m *model.Model) string {
	t.Helper()
	lm, err := lora.Apply(m, lora.Config{R: 4, Alpha: 8, TargetModules: []string{"q_proj", "v_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lm.Active().Params.Params {
		for i := range p.Data {
			p.Data[i] = float32(i%7-3) * 0.02
		}
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := lm.Active().Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setJSON sets key to value in the JSON object stored in path.
func setJSON(t testing.TB, path, key string, value any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	obj[key] = value
	if b, err = json.MarshalIndent(obj, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// lastJSON decodes the last line of out into v.
func lastJSON(t testing.TB, out string, v any) {
	t.Helper()
	b := []byte(out)
	for len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	i := len(b) - 1
	for i >= 0 && b[i] != '\n' {
		i--
	}
	if err := json.Unmarshal(b[i+1:], v); err != nil {
		t.Fatalf("last line of output is not JSON: %v\n%s", err, out)
	}
}
