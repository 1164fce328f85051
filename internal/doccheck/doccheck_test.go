// Package doccheck holds the test that keeps galleon documented: every
// package has a package comment, every exported identifier a doc comment,
// and every public package a runnable Example.
package doccheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// publicPackages must each carry at least one Example function.
var publicPackages = []string{"attention", "data", "lora", "model", "parallel", "quant", "tokenizer"}

// moduleRoot is two directories up from this package.
func moduleRoot(t *testing.T) string {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	return root
}

// packageDirs lists the directories holding Go files of this module,
// skipping generator modules and testdata.
func packageDirs(t *testing.T, root string) []string {
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "out") {
			return filepath.SkipDir
		}
		if path != root {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // a module of its own
			}
		}
		if m, _ := filepath.Glob(filepath.Join(path, "*.go")); len(m) > 0 {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// parseDir parses the non-test and test files of dir (all build tags).
func parseDir(t *testing.T, fset *token.FileSet, dir string) (src, tests []*ast.File) {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, p := range paths {
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, "_test.go") {
			tests = append(tests, f)
		} else {
			src = append(src, f)
		}
	}
	return src, tests
}

func TestEveryExportedIdentifierIsDocumented(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	for _, dir := range packageDirs(t, root) {
		rel, _ := filepath.Rel(root, dir)
		src, tests := parseDir(t, fset, dir)
		if len(src) == 0 {
			continue
		}
		hasPkgDoc := slices.ContainsFunc(src, func(f *ast.File) bool { return f.Doc != nil })
		if !hasPkgDoc {
			t.Errorf("%s: no package comment", rel)
		}
		for _, f := range src {
			for _, missing := range undocumented(f) {
				t.Errorf("%s: %s has no doc comment", fset.Position(missing.pos), missing.name)
			}
		}
		if slices.Contains(publicPackages, rel) && !hasExample(tests) {
			t.Errorf("%s: no runnable Example function", rel)
		}
	}
}

type gap struct {
	pos  token.Pos
	name string
}

// undocumented returns the exported declarations of f without a doc
// comment: functions, methods of exported types, types, and constants and
// variables (a comment on their group counts), and the exported fields and
// interface methods of exported types (a trailing line comment counts, and
// so does the type's doc comment naming the field).
func undocumented(f *ast.File) []gap {
	var gaps []gap
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() || d.Doc != nil {
				continue
			}
			if d.Recv != nil {
				if recv := receiverType(d.Recv.List[0].Type); recv == "" || !ast.IsExported(recv) {
					continue
				}
			}
			gaps = append(gaps, gap{d.Pos(), "func " + d.Name.Name})
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				switch s := spec.(type) {
				case *ast.TypeSpec:
					if !s.Name.IsExported() {
						continue
					}
					if s.Doc == nil && d.Doc == nil {
						gaps = append(gaps, gap{s.Pos(), "type " + s.Name.Name})
					}
					gaps = append(gaps, undocumentedMembers(s, docText(s.Doc, d.Doc))...)
				case *ast.ValueSpec:
					for _, n := range s.Names {
						if n.IsExported() && s.Doc == nil && s.Comment == nil && d.Doc == nil {
							gaps = append(gaps, gap{n.Pos(), n.Name})
						}
					}
				}
			}
		}
	}
	return gaps
}

// docText is the text of the first non-nil comment group.
func docText(groups ...*ast.CommentGroup) string {
	for _, g := range groups {
		if g != nil {
			return g.Text()
		}
	}
	return ""
}

// undocumentedMembers returns the exported fields (or interface methods) of
// s that have no comment of their own and that the type's doc comment does
// not name either.
func undocumentedMembers(s *ast.TypeSpec, typeDoc string) []gap {
	var list *ast.FieldList
	switch t := s.Type.(type) {
	case *ast.StructType:
		list = t.Fields
	case *ast.InterfaceType:
		list = t.Methods
	default:
		return nil
	}
	var gaps []gap
	for _, field := range list.List {
		if field.Doc != nil || field.Comment != nil {
			continue
		}
		for _, n := range field.Names {
			if n.IsExported() && !mentions(typeDoc, n.Name) {
				gaps = append(gaps, gap{n.Pos(), s.Name.Name + "." + n.Name})
			}
		}
	}
	return gaps
}

// mentions reports whether doc names ident as a whole word.
func mentions(doc, ident string) bool {
	for i := 0; ; {
		j := strings.Index(doc[i:], ident)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(ident)
		if (j == 0 || !isWordByte(doc[j-1])) && (end == len(doc) || !isWordByte(doc[end])) {
			return true
		}
		i = j + 1
	}
}

func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func receiverType(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return receiverType(t.X)
	case *ast.IndexExpr:
		return receiverType(t.X)
	case *ast.IndexListExpr:
		return receiverType(t.X)
	case *ast.Ident:
		return t.Name
	}
	return ""
}

func hasExample(tests []*ast.File) bool {
	for _, f := range tests {
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Example") {
				continue
			}
			// A runnable example has an output comment; go test runs it.
			for _, c := range f.Comments {
				if c.Pos() > fn.Body.Lbrace && c.End() < fn.Body.Rbrace && strings.HasPrefix(strings.TrimSpace(c.Text()), "Output:") {
					return true
				}
			}
		}
	}
	return false
}
