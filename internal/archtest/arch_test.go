package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/vpool/vpool"

type pkg struct {
	dir     string              // relative, slash-separated
	imports map[string][]string // import path -> files
	docs    []string            // files carrying a package doc comment
	name    string
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("archtest: go.mod not found above the test directory")
		}
		dir = parent
	}
}

// loadPackages parses the non-test Go files of every package in the repo.
func loadPackages(t *testing.T) map[string]*pkg {
	t.Helper()
	root := repoRoot(t)
	pkgs := map[string]*pkg{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			n := d.Name()
			if path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		p := pkgs[rel]
		if p == nil {
			p = &pkg{dir: rel, imports: map[string][]string{}, name: f.Name.Name}
			pkgs[rel] = p
		}
		if f.Doc != nil && strings.HasPrefix(strings.TrimSpace(f.Doc.Text()), "Package "+f.Name.Name) {
			p.docs = append(p.docs, filepath.Base(path))
		}
		if f.Doc != nil && f.Name.Name == "main" && strings.HasPrefix(strings.TrimSpace(f.Doc.Text()), "Command ") {
			p.docs = append(p.docs, filepath.Base(path))
		}
		for _, im := range f.Imports {
			ip, _ := strconv.Unquote(im.Path.Value)
			p.imports[ip] = append(p.imports[ip], filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func TestEveryPackageHasOneDocComment(t *testing.T) {
	for dir, p := range loadPackages(t) {
		switch len(p.docs) {
		case 0:
			t.Errorf("%s: no package doc comment (add a doc.go saying what lives here and what it must not import)", dir)
		case 1:
		default:
			t.Errorf("%s: package doc comment in several files %v: keep one", dir, p.docs)
		}
	}
}

func isStdlib(path string) bool {
	first := strings.SplitN(path, "/", 2)[0]
	return !strings.Contains(first, ".")
}

func internal(path string) (string, bool) {
	if strings.HasPrefix(path, module+"/") {
		return strings.TrimPrefix(path, module+"/"), true
	}
	return "", false
}

func under(dir, prefix string) bool { return dir == prefix || strings.HasPrefix(dir, prefix+"/") }

// rule says whether package dir may import path; it returns a reason when not.
type rule func(dir, path string) string

var rules = []rule{
	// Decision cores are pure: no store, no HTTP, no QEMU, no etcd.
	func(dir, path string) string {
		pure := []string{"internal/scheduler", "internal/balance", "internal/ha", "internal/energy", "internal/trace", "internal/model"}
		isPure := false
		for _, p := range pure {
			if under(dir, p) {
				isPure = true
			}
		}
		if under(dir, "internal/simulate") && !under(dir, "internal/simulate/simcmd") {
			isPure = true
		}
		if !isPure {
			return ""
		}
		if in, ok := internal(path); ok && (under(in, "internal/store") || under(in, "internal/server") || under(in, "internal/client") ||
			under(in, "internal/hypervisor") || under(in, "internal/qmp") || under(in, "internal/agent") || under(in, "internal/controller")) {
			return "decision packages must not import store, server, client, agent or hypervisor code"
		}
		if path == "net/http" || path == "os/exec" || strings.HasPrefix(path, "go.etcd.io/") {
			return "decision packages must not do I/O (net/http, os/exec, etcd)"
		}
		return ""
	},
	// The model is the shared vocabulary: stdlib only.
	func(dir, path string) string {
		if dir == "internal/model" && !isStdlib(path) {
			return "internal/model imports only the standard library"
		}
		return ""
	},
	// Only etcdstore touches etcd.
	func(dir, path string) string {
		if strings.HasPrefix(path, "go.etcd.io/") && !under(dir, "internal/store/etcdstore") {
			return "only internal/store/etcdstore may import etcd"
		}
		return ""
	},
	// Only the QEMU driver knows QMP.
	func(dir, path string) string {
		if in, ok := internal(path); ok && under(in, "internal/qmp") && !under(dir, "internal/hypervisor/qemu") && !under(dir, "internal/qmp") {
			return "only internal/hypervisor/qemu may import internal/qmp"
		}
		return ""
	},
	// The CLI knows only the client, the wire types and the model.
	func(dir, path string) string {
		if !under(dir, "internal/cli") {
			return ""
		}
		if in, ok := internal(path); ok && in != "internal/client" && in != "internal/api" && in != "internal/model" && !under(in, "internal/cli") {
			return "internal/cli may import only internal/client, internal/api and internal/model"
		}
		return ""
	},
	// The agent never opens the store.
	func(dir, path string) string {
		if !under(dir, "internal/agent") {
			return ""
		}
		if in, ok := internal(path); ok && (under(in, "internal/store") || under(in, "internal/server") || under(in, "internal/state")) {
			return "the agent talks to the server over the API only, never to the store"
		}
		return ""
	},
}

func TestImportRules(t *testing.T) {
	pkgs := loadPackages(t)
	dirs := make([]string, 0, len(pkgs))
	for d := range pkgs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		p := pkgs[d]
		for path, files := range p.imports {
			for _, r := range rules {
				if why := r(d, path); why != "" {
					t.Errorf("%s (%s) imports %s: %s", d, strings.Join(files, ","), path, why)
				}
			}
		}
	}
}

// TestRulesCatchViolations proves the rules are not vacuous.
func TestRulesCatchViolations(t *testing.T) {
	bad := []struct{ dir, path string }{
		{"internal/scheduler", module + "/internal/store"},
		{"internal/balance", "net/http"},
		{"internal/server", "go.etcd.io/etcd/client/v3"},
		{"internal/cli", module + "/internal/server"},
		{"internal/agent", module + "/internal/store/etcdstore"},
		{"internal/controller", module + "/internal/qmp"},
		{"internal/model", "github.com/google/go-cmp/cmp"},
	}
	for _, b := range bad {
		caught := false
		for _, r := range rules {
			if r(b.dir, b.path) != "" {
				caught = true
			}
		}
		if !caught {
			t.Errorf("rule missing: %s importing %s should be refused", b.dir, b.path)
		}
	}
}
