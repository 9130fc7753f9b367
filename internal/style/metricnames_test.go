package style

import (
	"fmt"
	"go/ast"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// Metric names get their edgeproxy_ prefix from internal/metric only, so
// that the namespace is written once.
func TestMetricNamesTakeTheirPrefixFromMetricName(t *testing.T) {
	root := moduleRoot(t)
	byFile := map[string][]string{}
	err := walkGo(root, func(rel string, fset *token.FileSet, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			if lit := metricNameLiteral(n); lit != nil {
				name, _ := strconv.Unquote(lit.Value)
				byFile[rel] = append(byFile[rel], fmt.Sprintf("%s:%d: %s", rel, fset.Position(lit.Pos()).Line, name))
			}
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, hits := range byFile {
		for _, h := range hits {
			t.Errorf("%s: write the name without its prefix inside metric.Name(...)", h)
		}
	}
}

// metricNameLiteral returns the "edgeproxy_..." string literal n gives
// as a metric's name (Name: in a prometheus *Opts, or the first argument
// of NewDesc), nil when n is not one.
func metricNameLiteral(n ast.Node) *ast.BasicLit {
	var e ast.Expr
	switch x := n.(type) {
	case *ast.KeyValueExpr:
		if id, ok := x.Key.(*ast.Ident); ok && id.Name == "Name" {
			e = x.Value
		}
	case *ast.CallExpr:
		if sel, ok := x.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewDesc" && len(x.Args) > 0 {
			e = x.Args[0]
		}
	}
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING || !strings.HasPrefix(lit.Value, `"edgeproxy_`) {
		return nil
	}
	return lit
}
