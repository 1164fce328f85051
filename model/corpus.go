package model

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// HeldOutDomain is the package prefix kept out of pretraining: the LoRA
// fine-tuning domain (examples/lora and examples/quickstart adapt to it).
const HeldOutDomain = "net/http/"

// generatedRE is the anchor's rule for generated files, applied to the part
// of the file before the first "\npackage " (the whole file if there is
// none). Go's `.` and multi-line `$` agree with Python's bytes regexp here:
// `.` matches any byte but '\n' (an invalid UTF-8 byte is one rune to Go),
// and `$` matches before '\n' or at the end.
var generatedRE = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

// CorpusOptions select the files of a corpus. Relative paths are those of
// the files under Root, with '/' separators, as the prefixes are written.
type CorpusOptions struct {
	// Root is the source directory whose relative paths are hashed and
	// sorted: "" means GOROOT/src (see GoSourceRoot).
	Root string
	// Include, when non-empty, keeps only files whose relative path starts
	// with one of these prefixes; fine-tuning uses []string{HeldOutDomain}.
	Include []string
	// Exclude drops files whose relative path starts with one of these
	// prefixes. nil means []string{HeldOutDomain} when Include is empty
	// (pretraining) and nothing otherwise; a non-nil empty slice excludes
	// nothing.
	Exclude []string
}

// Corpus is the training and validation text of a corpus, each the
// concatenation of its files in sorted path order.
type Corpus struct {
	Root       string   // the directory the files were read from
	Train      []byte   // training bytes (= tokens)
	Val        []byte   // validation bytes
	TrainFiles []string // relative paths, in order
	ValFiles   []string // relative paths, in order
	Generated  int      // files skipped as generated
}

// GoSourceRoot returns $(go env GOROOT)/src, the directory the PyTorch
// anchor reads, falling back to $GOROOT/src when no go command runs.
// `go env` comes first so that both sides read the same tree when several
// toolchains are installed; the GOROOT recorded in the binary
// (runtime.GOROOT, deprecated) is not used: it means nothing once the
// binary is copied to another machine.
func GoSourceRoot(ctx context.Context) (string, error) {
	goroot := ""
	if out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output(); err == nil {
		goroot = strings.TrimSpace(string(out))
	}
	if goroot == "" {
		goroot = os.Getenv("GOROOT")
	}
	if goroot == "" {
		return "", errors.New("model: cannot find GOROOT: no go command on PATH and $GOROOT is not set")
	}
	return filepath.Join(goroot, "src"), nil
}

// LoadCorpus reads the Go source corpus by the rules shared with the
// PyTorch reference pretraining script, which the comparison of results
// relies on byte for byte (TestCorpusRulesMatchAnchorSynthetic runs the same
// rules in Python, anchorRules in corpus_test.go, and compares the file
// lists):
//   - files whose name ends in ".go", under Root recursively; like Python's
//     glob, names starting with '.' (files or directories) are not matched;
//   - files under a directory named testdata or vendor are skipped, as are
//     files outside Include or inside Exclude (see CorpusOptions);
//   - a file is generated, and skipped, when the text before its first
//     "\npackage " has a line matching ^// Code generated .* DO NOT EDIT\.$;
//   - a file is validation when crc32-IEEE(relative path) % 20 == 0;
//   - files are concatenated in byte order of their relative paths (which
//     is the order of Python's sorted() on the full paths).
//
// Symbolic links to files are read; symbolic links to directories are not
// followed (Python's glob would follow them; the Go tree has none).
func LoadCorpus(ctx context.Context, opts CorpusOptions) (*Corpus, error) {
	root := opts.Root
	if root == "" {
		var err error
		if root, err = GoSourceRoot(ctx); err != nil {
			return nil, err
		}
	}
	exclude := opts.Exclude
	if exclude == nil && len(opts.Include) == 0 {
		exclude = []string{HeldOutDomain}
	}
	rels, err := listCorpus(ctx, root, opts.Include, exclude)
	if err != nil {
		return nil, err
	}
	srcs, err := readAll(ctx, root, rels)
	if err != nil {
		return nil, err
	}
	c := &Corpus{Root: root}
	var nTrain, nVal int
	keep := make([]bool, len(rels))
	for i, src := range srcs {
		head := src
		if j := bytes.Index(src, []byte("\npackage ")); j >= 0 {
			head = src[:j]
		}
		// The literal test is a cheap necessary condition of the regexp.
		if bytes.Contains(head, []byte("// Code generated ")) && generatedRE.Match(head) {
			c.Generated++
			continue
		}
		keep[i] = true
		if isValidation(rels[i]) {
			nVal += len(src)
		} else {
			nTrain += len(src)
		}
	}
	c.Train = make([]byte, 0, nTrain)
	c.Val = make([]byte, 0, nVal)
	for i, src := range srcs {
		if !keep[i] {
			continue
		}
		if isValidation(rels[i]) {
			c.Val = append(c.Val, src...)
			c.ValFiles = append(c.ValFiles, rels[i])
		} else {
			c.Train = append(c.Train, src...)
			c.TrainFiles = append(c.TrainFiles, rels[i])
		}
	}
	return c, nil
}

func isValidation(rel string) bool {
	return crc32.ChecksumIEEE([]byte(rel))%20 == 0
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// listCorpus returns the sorted relative paths of the candidate files,
// before the generated-file test (which needs their content).
func listCorpus(ctx context.Context, root string, include, exclude []string) ([]string, error) {
	var rels []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == root {
			if !d.IsDir() {
				return fmt.Errorf("%s is not a directory", root)
			}
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		name := d.Name()
		if d.IsDir() {
			// Every file below would be skipped by the rules: prune.
			if strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" ||
				hasAnyPrefix(rel+"/", exclude) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".go") {
			return nil
		}
		if strings.Contains("/"+rel, "/testdata/") || strings.Contains("/"+rel, "/vendor/") ||
			hasAnyPrefix(rel, exclude) || (len(include) > 0 && !hasAnyPrefix(rel, include)) {
			return nil
		}
		if !d.Type().IsRegular() {
			fi, err := os.Stat(path) // follows a symbolic link
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
		}
		rels = append(rels, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("model: listing corpus under %s: %w", root, err)
	}
	sort.Strings(rels)
	return rels, nil
}

// readAll reads the files in parallel (the tree is thousands of small
// files, so the time goes to system calls) and returns them in order.
func readAll(ctx context.Context, root string, rels []string) ([][]byte, error) {
	srcs := make([][]byte, len(rels))
	workers := min(2*runtime.GOMAXPROCS(0), 8, max(len(rels), 1))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rels[i])))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("model: reading corpus: %w", err)
					}
					mu.Unlock()
					continue
				}
				srcs[i] = b
			}
		}()
	}
	var ctxErr error
	for i := range rels {
		if ctxErr = ctx.Err(); ctxErr != nil {
			break
		}
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if ctxErr != nil {
		return nil, fmt.Errorf("model: loading corpus: %w", ctxErr)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return srcs, nil
}
