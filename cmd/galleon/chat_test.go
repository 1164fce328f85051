package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/tokenizer"
)

// runChat runs galleon chat with stdin from a pipe and returns the exit
// status, stdout and stderr.
func runChat(t *testing.T, input string, args ...string) (int, string, string) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, input)
		pw.Close()
	}()
	var out, errb bytes.Buffer
	err := chat(context.Background(), args, pr, &out, &errb)
	code := 0
	if err != nil {
		code = 1
		errb.WriteString(err.Error())
	}
	return code, out.String(), errb.String()
}

// Two turns through a pipe: each reply equals greedy generation from the
// whole conversation rendered and run from scratch, and the second turn
// runs only the tokens the cache does not hold.
func TestChatKVCacheMatchesReprefill(t *testing.T) {
	dir, m := tinyLlamaDir(t)
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := runChat(t, "Hello there\n\nWhat is Go?\n", "-model", dir, "-system", "Be brief.", "-temperature", "0", "-max-tokens", "10", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var res chatResult
	lastJSON(t, out, &res)
	if len(res.Turns) != 2 {
		t.Fatalf("%d turns, want 2: %s", len(res.Turns), out)
	}
	msgs := []tokenizer.Message{{Role: "system", Content: "Be brief."}}
	var printed strings.Builder
	for i, user := range []string{"Hello there", "What is Go?"} {
		msgs = append(msgs, tokenizer.Message{Role: "user", Content: user})
		ids, err := tk.EncodeChat(msgs, true)
		if err != nil {
			t.Fatal(err)
		}
		want, err := m.Generate(context.Background(), ids, 10, model.SampleOptions{Stop: []int32{2}})
		if err != nil {
			t.Fatal(err)
		}
		turn := res.Turns[i]
		if !slices.Equal(turn.IDs, want) || turn.PromptTokens != len(ids) {
			t.Fatalf("turn %d: %v from %d prompt tokens, re-prefilled %v from %d", i, turn.IDs, turn.PromptTokens, want, len(ids))
		}
		if i == 1 && turn.Prefilled > turn.PromptTokens-res.Turns[0].PromptTokens {
			t.Errorf("turn 2 ran %d of %d prompt tokens: the first turn's %d were not reused", turn.Prefilled, turn.PromptTokens, res.Turns[0].PromptTokens)
		}
		text, _ := tk.Decode(slices.DeleteFunc(slices.Clone(want), func(id int32) bool { return id == 2 }))
		if turn.Text != text {
			t.Fatalf("turn %d text %q, want %q", i, turn.Text, text)
		}
		printed.WriteString(text + "\n")
		msgs = append(msgs, tokenizer.Message{Role: "assistant", Content: text})
	}
	if !strings.HasPrefix(out, printed.String()) {
		t.Fatalf("stdout %q, want the replies %q first", out, printed.String())
	}
	if res.ReusedTokens == 0 || res.PrefilledTokens+res.ReusedTokens != res.Turns[0].PromptTokens+res.Turns[1].PromptTokens {
		t.Fatalf("token counts %+v", res)
	}
}

// /exit ends the conversation; a small cache drops the oldest turns and
// still answers; a model without a chat template is refused in one line.
func TestChatExitContextAndErrors(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	code, out, errs := runChat(t, "one\n/exit\ntwo\n", "-model", dir, "-max-tokens", "3", "-json")
	var res chatResult
	lastJSON(t, out, &res)
	if code != 0 || len(res.Turns) != 1 {
		t.Fatalf("exit %d, %d turns: %s", code, len(res.Turns), errs)
	}
	input := strings.Repeat("tell me more about the weather today please\n", 6)
	code, out, errs = runChat(t, input, "-model", dir, "-max-tokens", "20", "-ctx", "64", "-temperature", "0", "-json")
	lastJSON(t, out, &res)
	if code != 0 || len(res.Turns) != 6 || !strings.Contains(errs, "dropped") {
		t.Fatalf("small cache: exit %d, %d turns, stderr %q", code, len(res.Turns), errs)
	}
	for _, turn := range res.Turns {
		if turn.PromptTokens+len(turn.IDs) > 64+1 {
			t.Fatalf("turn %+v does not fit the cache", turn)
		}
	}
	code, _, errs = runChat(t, strings.Repeat("word ", 80)+"\n", "-model", dir, "-ctx", "32")
	if code != 0 || !strings.Contains(errs, "not answered") {
		t.Fatalf("too long a message: exit %d, %q", code, errs)
	}
	gdir, _ := tinyGPT2Dir(t)
	if code, _, errs := galleon(t, "chat", "-model", gdir); code != 1 || !strings.Contains(errs, "no chat template") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("no template: exit %d, %q", code, errs)
	}
}

// The command itself, with its standard input a pipe: two turns, then EOF
// ends the conversation with status 0; a bad flag is one line, status 2.
func TestChatProcessPipe(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	code, out, errs := execGalleon(t, "Hello\nAgain\n", "chat", "-model", dir, "-max-tokens", "4", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var res chatResult
	lastJSON(t, out, &res)
	if len(res.Turns) != 2 || errs != "" {
		t.Fatalf("%d turns, stderr %q", len(res.Turns), errs)
	}
	code, out, errs = execGalleon(t, "", "chat", "-model", dir, "-top-p", "2")
	if code != 2 || out != "" || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("bad flag: exit %d, %q, %q", code, out, errs)
	}
}

// Ctrl-C ends the conversation as EOF does, with status 0 and the results.
func TestChatInterrupt(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	cmd := exec.Command(os.Args[0], "chat", "-model", dir, "-max-tokens", "3", "-json")
	cmd.Env = append(os.Environ(), "GALLEON_TEST_MAIN=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	io.WriteString(stdin, "Hello\n")
	r := bufio.NewReader(stdout)
	if _, err := r.ReadString('\n'); err != nil { // the reply has begun: the handler is installed
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	var res chatResult
	lastJSON(t, string(rest), &res)
	if len(res.Turns) != 1 || !strings.Contains(errb.String(), "[interrupted]") {
		t.Fatalf("%+v, stderr %q", res, errb.String())
	}
}

// Turns dropped to fit the cache go by exchanges, so the conversation
// still starts with a user message and roles alternate.
func TestChatDropsWholeExchanges(t *testing.T) {
	dir, _ := tinyLlamaDir(t)
	l, err := loadBase(context.Background(), baseFlags{Model: dir})
	if err != nil {
		t.Fatal(err)
	}
	s, err := newChatSession(l, dir, "", 80, sampleFlags{maxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	dropped := 0
	for i := 0; i < 8; i++ {
		if err := s.turn(context.Background(), "tell me about the weather please", io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		dropped += s.res.Turns[len(s.res.Turns)-1].Dropped
		for j, m := range s.history {
			if want := []string{"user", "assistant"}[j%2]; m.Role != want {
				t.Fatalf("turn %d: message %d is %s, want %s", i, j, m.Role, want)
			}
		}
	}
	if dropped == 0 || dropped%2 != 0 {
		t.Fatalf("dropped %d messages", dropped)
	}
}
