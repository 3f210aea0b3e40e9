package controller

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOnlyTheElectionTouchesTheRawStore keeps the fence unforgettable:
// the unfenced store (Config.Store) is used only to campaign and to start
// a term (election.go, manager.go); every other write goes through a
// term's repository (state.Repo.Term), whose every transaction carries
// the leadership guard. A new controller that reaches for cfg.Store, or
// calls Txn on anything but a repository, fails here.
func TestOnlyTheElectionTouchesTheRawStore(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		election := name == "election.go" || name == "manager.go"
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			recv := types.ExprString(sel.X)
			switch {
			case sel.Sel.Name == "Store" && strings.HasSuffix(recv, "cfg") && !election:
				t.Errorf("%s: %s.Store outside the election: write through the term's repository", fset.Position(sel.Pos()), recv)
			case sel.Sel.Name == "Txn" && !strings.HasSuffix(recv, "repo") && !election:
				t.Errorf("%s: %s.Txn: a transaction outside the term's repository is not fenced", fset.Position(sel.Pos()), recv)
			}
			return true
		})
	}
}
