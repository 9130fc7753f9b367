package style

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxFuncLines is the longest a function may be, from its func line to
// its closing brace: what fits on a screen.
const maxFuncLines = 100

// longFunc is a function over the limit.
type longFunc struct {
	name  string // path:Func or path:Recv.Method
	fn    string // Func or Recv.Method
	pos   string // path:line
	lines int
}

// Every non-test function of the module, generated code aside, fits in
// maxFuncLines lines.
func TestFunctionsFitOnAScreen(t *testing.T) {
	root := moduleRoot(t)
	long, err := longFuncs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range long {
		t.Errorf("%s: %s is %d lines (limit %d): split it along its sections",
			f.pos, f.fn, f.lines, maxFuncLines)
	}
}

// longFuncs returns the functions over the limit in the non-test,
// non-generated Go files under root.
func longFuncs(root string) ([]longFunc, error) {
	var out []longFunc
	err := walkGo(root, func(rel string, fset *token.FileSet, f *ast.File) {
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
			if n := end.Line - start.Line + 1; n > maxFuncLines {
				fn := funcName(fd)
				out = append(out, longFunc{name: rel + ":" + fn, fn: fn, pos: fmt.Sprintf("%s:%d", rel, start.Line), lines: n})
			}
		}
	})
	return out, err
}

// walkGo parses every non-test, non-generated Go file under root and
// passes it to fn with its slash-separated path from root.
func walkGo(root string, fn func(rel string, fset *token.FileSet, f *ast.File)) error {
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		fn(filepath.ToSlash(rel), fset, f)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the Go files under %s: %w", root, err)
	}
	return nil
}

// funcName is Func, or Recv.Method for a method.
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	typ := fd.Recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	switch x := typ.(type) {
	case *ast.IndexExpr:
		typ = x.X
	case *ast.IndexListExpr:
		typ = x.X
	}
	if id, ok := typ.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("find the module root with go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		t.Fatal("find the module root: go env GOMOD names no go.mod (run the test inside the module)")
	}
	return filepath.Dir(mod)
}
