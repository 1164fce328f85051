package main

// load.go is the one place every subcommand reads a model: the flags that
// name it (-model, -adapter, -int8, -base-dtype), the model itself (a Hugging Face
// directory or a galleon checkpoint file), its tokenizer behind one
// interface, the LoRA adapter applied on top, the ids that end a
// generation, and the data options that turn fine-tuning files into tokens
// for it. Commands that need a model call baseFlags.register on their flag
// set, baseFlags.check after parsing, then loadBase.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/galleon-ml/galleon/data"
	"github.com/galleon-ml/galleon/lora"
	"github.com/galleon-ml/galleon/model"
	"github.com/galleon-ml/galleon/quant"
	"github.com/galleon-ml/galleon/tokenizer"
)

// baseFlags names the model a command runs: the flags -model, -adapter,
// -int8 and -base-dtype that every model-reading subcommand shares.
type baseFlags struct {
	// Model is a Hugging Face model directory (config.json, safetensors
	// weights, tokenizer.json) or a galleon checkpoint file (byte-level
	// tokens, no tokenizer file).
	Model string
	// Adapter is a PEFT LoRA adapter directory applied on top of the
	// model; empty for none.
	Adapter string
	// Int8 runs the model's linear layers on int8 weights.
	Int8 bool
	// DType is how a Hugging Face directory's BF16 weights are held (see
	// parseBaseDType): dtypeBF16 keeps them in bfloat16 (an error when
	// the directory stores none), dtypeAuto keeps those stored as BF16,
	// and dtypeFloat32 or "" widens everything to float32.
	DType string
	// Cmd is the subcommand's name, which starts usage errors (check
	// sets it).
	Cmd string
}

// The -base-dtype values, as parseBaseDType returns them.
const (
	dtypeAuto    = "auto"
	dtypeFloat32 = "float32"
	dtypeBF16    = "bf16"
)

// parseBaseDType returns the -base-dtype value s names: auto, float32 (or
// fp32) or bf16 (or bfloat16).
func parseBaseDType(s string) (string, bool) {
	switch s {
	case "auto":
		return dtypeAuto, true
	case "float32", "fp32":
		return dtypeFloat32, true
	case "bf16", "bfloat16":
		return dtypeBF16, true
	}
	return "", false
}

// baseDTypeUsage is -base-dtype's help for the commands that only run a
// model (finetune has its own).
const baseDTypeUsage = "how the weights of the linear layers and a Llama-family token embedding are held: " +
	"bf16 keeps a checkpoint's BF16 weights in bfloat16 (half the memory; the products take bfloat16 operands and accumulate in float32), " +
	"float32 widens them exactly, auto keeps them as the checkpoint stores them"

// register adds -model, -adapter, -int8 and -base-dtype to fs, filling b.
func (b *baseFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.Model, "model", "", "Hugging Face model `dir` (config.json, *.safetensors, tokenizer.json) or galleon checkpoint file (required)")
	fs.StringVar(&b.Adapter, "adapter", "", "PEFT LoRA adapter `dir` (adapter_config.json, adapter_model.safetensors) to apply")
	fs.BoolVar(&b.Int8, "int8", false, "run the linear layers on int8 weights (per-channel weights, per-token activations)")
	fs.StringVar(&b.DType, "base-dtype", dtypeAuto, "`dtype` auto, float32 or bf16: "+baseDTypeUsage)
}

// check returns the usage error of a command line that names no model or
// an unknown or contradictory -base-dtype. cmd is the subcommand's name,
// which starts the message.
func (b *baseFlags) check(cmd string) error {
	if b.Model == "" {
		return usageError{cmd + ": -model is required"}
	}
	if b.DType == "" { // commands without the flag (merge) widen
		b.DType = dtypeFloat32
	}
	d, ok := parseBaseDType(b.DType)
	if !ok {
		return usageError{fmt.Sprintf("%s: -base-dtype %q: want auto, float32 or bf16", cmd, b.DType)}
	}
	if d == dtypeBF16 && b.Int8 {
		return usageError{cmd + ": -base-dtype bf16 and -int8 exclude each other: -int8 holds the linear weights in int8"}
	}
	b.DType, b.Cmd = d, cmd
	return nil
}

// loaded is a model ready to run, with everything a command needs around it.
type loaded struct {
	// Model is the model to run: int8 layers with -int8, and the
	// adapter's layers installed when -adapter was given (its inference
	// path, Loss, Logits and Generate then include the adapter).
	Model *model.Model
	// LoRA wraps Model when an adapter was loaded (its adapter is
	// "default" and active); nil otherwise.
	LoRA *lora.Model
	// Tok is the model's tokenizer: the directory's tokenizer.json, or
	// galleon's byte-level tokens for a checkpoint file.
	Tok textTokenizer
	// EOS lists the ids that end a generation: config.json's and
	// generation_config.json's eos_token_id (an int or a list) and the
	// tokenizer's eos token, without repeats; empty for byte-level
	// checkpoints, which have none.
	EOS []int32
	// HF reports whether Model came from a Hugging Face directory.
	HF bool
	// DType is how the base's weights are held: dtypeBF16 when
	// LoadPretrained kept some in bfloat16 (model.KeepBF16), dtypeFloat32
	// otherwise (also for -int8, whose other tensors are float32).
	DType string
}

// loadBase reads the model that f names. A directory is a Hugging Face
// model (model.LoadPretrained) with its tokenizer (tokenizer.Load); a file
// is a galleon checkpoint (model.Load) with byte-level tokens. With f.Int8
// the linear layers become int8 (loadInt8); with f.DType auto or bf16 the
// BF16 weights of a directory stay bfloat16 (model.KeepBF16); with
// f.Adapter the PEFT adapter is loaded on top, over the int8 or bfloat16
// layers if any.
func loadBase(ctx context.Context, f baseFlags) (*loaded, error) {
	st, err := os.Stat(f.Model)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	l := &loaded{HF: st.IsDir(), DType: dtypeFloat32}
	if l.HF {
		tk, err := tokenizer.Load(f.Model)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Model, err)
		}
		l.Tok = hfTokenizer{tk}
		if l.EOS, err = eosIDs(f.Model, tk); err != nil {
			return nil, err
		}
	} else {
		l.Tok = byteTokenizer{}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.Int8 {
		l.Model, err = loadInt8(ctx, f.Model, l.HF)
	} else if l.HF {
		if _, serr := os.Stat(filepath.Join(f.Model, quant.Int8WeightsFile)); serr == nil {
			return nil, fmt.Errorf("%s holds int8 weights (%s): add -int8", f.Model, quant.Int8WeightsFile)
		}
		var opts []model.LoadOption
		if f.DType == dtypeAuto || f.DType == dtypeBF16 {
			opts = append(opts, model.KeepBF16())
		}
		l.Model, err = model.LoadPretrained(f.Model, opts...)
	} else {
		l.Model, err = model.Load(f.Model)
	}
	if err != nil {
		return nil, err
	}
	if l.Model.BF16Params() > 0 {
		l.DType = dtypeBF16
	} else if f.DType == dtypeBF16 {
		return nil, usageError{fmt.Sprintf("%s: -base-dtype bf16: %s stores no BF16 weights to keep (use -base-dtype float32 or auto)", f.Cmd, f.Model)}
	}
	// Every id the tokenizer can produce must have an embedding row; the
	// model may have more rows than the tokenizer has tokens (Qwen pads
	// its vocabulary).
	if v := l.Tok.VocabSize(); v > l.Model.Config.Vocab {
		return nil, fmt.Errorf("%s: the tokenizer has %d tokens but the model only %d embedding rows", f.Model, v, l.Model.Config.Vocab)
	}
	for _, id := range l.EOS {
		if int(id) >= l.Model.Config.Vocab {
			return nil, fmt.Errorf("%s: eos_token_id %d is outside the model's vocabulary of %d", f.Model, id, l.Model.Config.Vocab)
		}
	}
	if f.Adapter != "" {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if l.LoRA, err = lora.Wrap(l.Model); err != nil {
			return nil, err
		}
		if _, err := l.LoRA.LoadAdapter(f.Adapter, lora.DefaultAdapter); err != nil {
			return nil, fmt.Errorf("adapter %s: %w", f.Adapter, err)
		}
	}
	return l, nil
}

// loadInt8 reads the model at path with its linear layers on int8
// weights: per output channel, per-token int8 activations with LLM.int8()
// outlier columns in float32 (quant.DefaultConfig), and the output head
// int8 too when it is not tied to the token embedding (int8Config).
//
// A Hugging Face directory, float or an int8 one that galleon quantize
// wrote, goes through quant.LoadPretrained, which streams the files one
// tensor at a time and quantizes each linear weight as it is read: memory
// follows the int8 weights and the float32 embeddings and norms, never the
// float32 model. A galleon checkpoint file (small models) is read in
// float32, quantized with quant.Quantize, and its replaced float32 weights
// released.
func loadInt8(ctx context.Context, path string, hf bool) (*model.Model, error) {
	if hf {
		q, err := quant.LoadPretrained(path, int8Config())
		if err != nil {
			return nil, err
		}
		return q.Model, ctx.Err()
	}
	m, err := model.Load(path)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := quant.Quantize(m, quant.DefaultConfig())
	if err != nil {
		return nil, err
	}
	if _, err := q.ReleaseReplaced(); err != nil {
		return nil, err
	}
	return q.Model, nil
}

// int8Config is how -int8 and galleon quantize quantize a Hugging Face
// model: quant.DefaultConfig with an int8 output head (an untied head is a
// vocabulary-sized matrix, a quarter of its float32 bytes as int8; a tied
// one stays the float32 token embedding).
func int8Config() quant.Config {
	c := quant.DefaultConfig()
	c.Head = true
	return c
}

// eosIDs collects the ids that end a generation for the model in dir:
// eos_token_id from config.json and generation_config.json (each an int, a
// list of ints or absent) and the tokenizer's eos token, in that order,
// without repeats.
func eosIDs(dir string, tk *tokenizer.Tokenizer) ([]int32, error) {
	var ids []int32
	add := func(id int64) {
		if id >= 0 && id <= 1<<31-1 && !slices.Contains(ids, int32(id)) {
			ids = append(ids, int32(id))
		}
	}
	for _, name := range []string{"config.json", "generation_config.json"} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		var cfg struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return nil, fmt.Errorf("model: %s: %w", filepath.Join(dir, name), err)
		}
		if len(cfg.EOS) == 0 || string(cfg.EOS) == "null" {
			continue
		}
		var one int64
		var list []int64
		switch {
		case json.Unmarshal(cfg.EOS, &one) == nil:
			add(one)
		case json.Unmarshal(cfg.EOS, &list) == nil:
			for _, id := range list {
				add(id)
			}
		default:
			return nil, fmt.Errorf("model: %s: eos_token_id %s is neither an int nor a list of ints", filepath.Join(dir, name), cfg.EOS)
		}
	}
	add(int64(tk.EOS()))
	return ids, nil
}

// textTokenizer is a loaded model's tokenizer, the same for a Hugging Face
// tokenizer.json and for galleon checkpoints' byte-level tokens.
type textTokenizer interface {
	// Encode returns text's ids without special tokens (the data package's
	// Encoder).
	Encode(text string) []int32
	// EncodePrompt returns a prompt's ids with the special tokens the
	// tokenizer adds to a sequence (such as Llama's BOS), as Hugging
	// Face's generation pipelines tokenize prompts.
	EncodePrompt(text string) []int32
	// Decode returns the text of ids.
	Decode(ids []int32) (string, error)
	// DecodeSkipSpecial returns the text of ids without special tokens.
	DecodeSkipSpecial(ids []int32) (string, error)
	// NewStream returns a streaming decoder that emits text only when it
	// ends on a complete UTF-8 character.
	NewStream() tokenStream
	// BOS and EOS return the tokenizer's beginning- and end-of-sequence
	// ids, or -1.
	BOS() int32
	EOS() int32
	// VocabSize is one more than the largest id the tokenizer produces.
	VocabSize() int
	// ApplyChatTemplate renders a conversation with the tokenizer's chat
	// template (an error wrapping tokenizer.ErrNoChatTemplate when it has
	// none); addGenerationPrompt appends the assistant turn's header.
	ApplyChatTemplate(messages []tokenizer.Message, addGenerationPrompt bool) (string, error)
	// Special returns the text of a special token id ("" for -1 or for
	// tokenizers without them).
	Special(id int32) string
}

// tokenStream decodes generated ids one at a time (tokenizer.Decoder).
type tokenStream interface {
	// Add appends id and returns the text that became complete.
	Add(id int32) (string, error)
	// Flush returns the text still held back and resets the stream.
	Flush() string
}

// hfTokenizer is a Hugging Face tokenizer.json.
type hfTokenizer struct{ *tokenizer.Tokenizer }

func (t hfTokenizer) EncodePrompt(text string) []int32 { return t.EncodeSpecial(text) }
func (t hfTokenizer) NewStream() tokenStream           { return t.NewDecoder() }
func (t hfTokenizer) Special(id int32) string {
	if id < 0 {
		return ""
	}
	s, _ := t.IDToToken(id)
	return s
}

// byteTokenizer is the byte-level tokenization of galleon checkpoints: one
// token per byte, no special tokens, no chat template.
type byteTokenizer struct{}

func (byteTokenizer) Encode(text string) []int32       { return model.Encode(text) }
func (byteTokenizer) EncodePrompt(text string) []int32 { return model.Encode(text) }
func (byteTokenizer) BOS() int32                       { return -1 }
func (byteTokenizer) EOS() int32                       { return -1 }
func (byteTokenizer) VocabSize() int                   { return model.VocabSize }
func (byteTokenizer) Special(int32) string             { return "" }
func (byteTokenizer) NewStream() tokenStream           { return &byteStream{} }

func (byteTokenizer) Decode(ids []int32) (string, error) {
	b, ok := model.DecodeBytes(ids)
	if !ok {
		return "", fmt.Errorf("decode: an id is not a byte (0…255): %w", tokenizer.ErrUnknownID)
	}
	return string(b), nil
}

func (t byteTokenizer) DecodeSkipSpecial(ids []int32) (string, error) { return t.Decode(ids) }

func (byteTokenizer) ApplyChatTemplate([]tokenizer.Message, bool) (string, error) {
	return "", fmt.Errorf("galleon checkpoints have byte-level tokens: %w", tokenizer.ErrNoChatTemplate)
}

// byteStream holds back the bytes of an incomplete UTF-8 character.
type byteStream struct{ pending []byte }

func (s *byteStream) Add(id int32) (string, error) {
	if id < 0 || id > 255 {
		return "", fmt.Errorf("decode id %d: %w", id, tokenizer.ErrUnknownID)
	}
	s.pending = append(s.pending, byte(id))
	// Emit everything up to the last character start whose character is
	// complete; hold back a partial character at the end.
	cut := len(s.pending)
	for k := 1; k <= utf8.UTFMax && k <= len(s.pending); k++ {
		c := s.pending[len(s.pending)-k]
		if c < utf8.RuneSelf {
			break
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(s.pending[len(s.pending)-k:]) {
				cut = len(s.pending) - k
			}
			break
		}
	}
	out := string(s.pending[:cut])
	s.pending = append(s.pending[:0], s.pending[cut:]...)
	return out, nil
}

func (s *byteStream) Flush() string {
	out := string(s.pending)
	s.pending = s.pending[:0]
	return out
}

// dataOptions returns how data files become this model's tokens, the same
// for training and evaluation: the tokenizer's Encode; BOS before every
// example when the tokenizer adds one to sequences (Llama) and EOS after
// it, so a model learns to stop; {"messages"} lines rendered with the chat
// template, assistant turns trained (chatRenderer). Galleon checkpoints get
// plain bytes with neither.
func (l *loaded) dataOptions() data.Options {
	opts := data.Options{Encoder: l.Tok, BOS: -1, EOS: l.Tok.EOS()}
	if bos := l.Tok.BOS(); bos >= 0 {
		if ids := l.Tok.EncodePrompt("a"); len(ids) > 0 && ids[0] == bos {
			opts.BOS = bos
		}
	}
	opts.Chat = chatRenderer{tok: l.Tok, bos: l.Tok.Special(opts.BOS), eos: l.Tok.Special(opts.EOS)}
	return opts
}

// chatRenderer renders conversations with a tokenizer's chat template for
// the data package (data.TemplateRenderer finds the assistant turns).
// Templates that write the BOS and EOS tokens themselves (Llama 2's) would
// repeat the ones the data options add, so Render drops a leading bos from
// the first segment and, when the last segment is trained, a final eos and
// the whitespace after it (ChatML's "<|im_end|>\n"), leaving both to the
// options; an earlier assistant turn keeps its eos, trained.
type chatRenderer struct {
	tok      textTokenizer
	bos, eos string // "" when the options add none
}

// Render implements data.ChatRenderer.
func (r chatRenderer) Render(ms []data.Message) ([]data.Segment, error) {
	segs, err := data.TemplateRenderer(r.render).Render(ms)
	if err != nil || len(segs) == 0 {
		return segs, err
	}
	if r.bos != "" {
		segs[0].Text = strings.TrimPrefix(segs[0].Text, r.bos)
	}
	if last := &segs[len(segs)-1]; r.eos != "" && last.Train {
		if t := strings.TrimRight(last.Text, " \t\r\n"); strings.HasSuffix(t, r.eos) {
			last.Text = strings.TrimSuffix(t, r.eos)
		}
	}
	return segs, nil
}

func (r chatRenderer) render(ms []data.Message, addGenerationPrompt bool) (string, error) {
	msgs := make([]tokenizer.Message, len(ms))
	for i, m := range ms {
		msgs[i] = tokenizer.Message{Role: m.Role, Content: m.Content}
	}
	return r.tok.ApplyChatTemplate(msgs, addGenerationPrompt)
}
