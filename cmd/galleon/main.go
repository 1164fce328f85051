// Command galleon runs Hugging Face language models in pure Go: it
// fine-tunes, generates, chats and evaluates, with LoRA adapters and int8
// weights.
//
// Usage:
//
//	galleon finetune -model DIR -data FILE [-out DIR] [-steps N | -epochs E] [-batch B] [-seq T] [-accum K]
//	    [-lr X] [-warmup N] [-lora-r 8] [-lora-alpha 32] [-lora-dropout 0.1] [-target q_proj,v_proj | all-linear]
//	    [-full] [-int8] [-workers N] [-grad-checkpointing] [-val FILE | -val-fraction F] [-resume DIR] [-seed S] [-json]
//	galleon generate -model DIR [-adapter DIR] [-int8] -prompt TEXT [-max-tokens N] [-temperature T] [-top-k K] [-top-p P] [-seed S] [-json]
//	galleon chat -model DIR [-adapter DIR] [-int8] [-system TEXT] [-ctx N] [-max-tokens N] [sampling flags] [-json]
//	galleon eval -model DIR [-adapter DIR] [-int8] -data FILE [-seq T] [-batch B] [-json]
//
// Every command that reads a model takes the same three flags: -model is a
// Hugging Face directory (config.json, safetensors weights, tokenizer.json
// and tokenizer_config.json) or a galleon checkpoint file (byte-level
// tokens); -adapter applies a PEFT LoRA adapter directory; -int8 runs the
// linear layers on int8 weights.
//
// finetune trains a LoRA adapter (or, with -full, every weight) on a .txt
// file (packed into windows) or JSON lines of {"text"}, {"prompt",
// "completion"} (loss on the completion only) or {"messages"} (rendered
// with the model's chat template, loss on the assistant turns only). It
// shows loss, validation loss, tokens/s, ETA and memory as it trains, and
// writes to -out the PEFT adapter directory (or the model), loss.png and
// train.log. Ctrl-C or SIGTERM saves a checkpoint there that -resume
// continues exactly, with -workers and under -mpi too (there rank 0 saves
// it after the step that was running).
//
// generate continues a prompt (tokenized with the tokenizer's special
// tokens, such as Llama's BOS) and prints the text as each token is
// sampled, until -max-tokens or an end-of-sequence id (eos_token_id of
// config.json and generation_config.json, and the tokenizer's).
//
// chat reads one user message per line of stdin and answers each,
// rendering the conversation with the tokenizer's chat template and keeping
// the KV cache across turns, so a turn runs only its new tokens. When the
// conversation no longer fits -ctx tokens, the oldest messages after the
// system prompt are dropped. It ends at EOF, Ctrl-C or a line "/exit"; "/reset"
// starts the conversation again.
//
// eval prints the loss over the tokens that carry loss in a .txt or .jsonl
// file (any format of the data package: text, prompt/completion with the
// prompt masked, chat messages with only assistant turns scored), its
// perplexity and bits per byte, where the bytes are those of the text the
// scored tokens decode to.
//
// Bad flags print one line and exit with status 2; failures exit with
// status 1. With -json the last line of output is one JSON object of
// results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/galleon-ml/galleon/internal/report"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is a bad command line: reported in one line, exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// commandNames lists the subcommands' names, comma-separated.
func commandNames() string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// command is one subcommand: its name, a one-line summary for the usage
// text, and the function that parses its flags and runs it.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands in the order the usage text prints them.
// Each subcommand lives in the file of its name.
var commands = []command{
	{"eval", "loss, perplexity and bits per byte of a model on a data file", evalCmd},
	{"finetune", "fine-tune a Hugging Face model with LoRA (or fully) on a data file", finetuneCmd},
	{"generate", "continue a prompt, streaming the text as it is sampled", generateCmd},
	{"chat", "talk with a model over stdin and stdout, keeping the KV cache across turns", chatCmd},
	{"merge", "merge a LoRA adapter into its base: a Hugging Face model directory", mergeCmd},
	{"quantize", "write an int8 model directory from a Hugging Face directory", quantizeCmd},
}

// usage returns the top-level usage text.
func usage() string {
	var b strings.Builder
	b.WriteString("usage: galleon <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-9s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun \"galleon <command> -h\" for a command's flags.\n")
	return b.String()
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage())
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var err error = usageError{fmt.Sprintf("unknown command %q (commands: %s)", args[0], commandNames())}
	for _, c := range commands {
		if c.name == args[0] {
			err = c.run(ctx, args[1:], stdout, stderr)
		}
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "galleon %s\n", ue.msg)
		return 2
	}
	report.ClearLine(stderr)
	fmt.Fprintf(stderr, "galleon: %v\n", err)
	return 1
}

// parse parses a subcommand's flags; a flag error becomes a usageError of
// one line, and -h prints the flags.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintf(stderr, "usage of galleon %s:\n", fs.Name())
			fs.PrintDefaults()
			return err
		}
		return usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}
