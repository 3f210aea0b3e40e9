package cli

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the CLI a pure client: besides the standard library it
// may import only the client, the wire types, the model, cobra and yaml.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"github.com/vpool/vpool/internal/client": true,
		"github.com/vpool/vpool/internal/api":    true,
		"github.com/vpool/vpool/internal/model":  true,
		"github.com/spf13/cobra":                 true,
		"sigs.k8s.io/yaml":                       true,
		// the audit verifier: pure (stdlib + model), so that the CLI
		// verifies the trail without trusting the server
		"github.com/vpool/vpool/internal/audit": true,
	}
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
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range f.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			stdlib := !strings.Contains(strings.SplitN(path, "/", 2)[0], ".")
			if !stdlib && !allowed[path] {
				t.Errorf("%s imports %s: internal/cli may import only internal/client, internal/api, internal/model, cobra, sigs.k8s.io/yaml and the standard library", name, path)
			}
		}
	}
}
