package report

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
)

// Main is an example's main after its flags are parsed: it runs body with a
// context that Ctrl-C cancels (training loops stop between steps), then,
// under -json (jsonOut), prints body's result as the JSON last line. An
// error is printed prefixed with the command's name and exits with status
// 1. Results go to stdout, progress and messages to stderr.
func Main[R any](name string, jsonOut bool, body func(ctx context.Context, stdout, stderr io.Writer) (R, error)) {
	if err := run(name, jsonOut, os.Stdout, os.Stderr, body); err != nil {
		ClearLine(os.Stderr)
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func run[R any](name string, jsonOut bool, stdout, stderr io.Writer, body func(ctx context.Context, stdout, stderr io.Writer) (R, error)) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := body(ctx, stdout, stderr)
	if err != nil {
		return err
	}
	if jsonOut {
		return PrintJSON(stdout, res)
	}
	return nil
}
