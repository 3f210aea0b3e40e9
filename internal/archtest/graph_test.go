package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
)

// listed is what `go list -json` says of one package.
type listed struct {
	ImportPath string
	Standard   bool
	Imports    []string // direct imports of the non-test files
	Deps       []string // every package they need, transitively
	Module     *struct{ Path string }
	Error      *struct{ Err string }
}

// graph is the build graph of the module's non-test code.
type graph struct {
	// ours holds the module's packages by module-relative path
	// ("internal/scheduler", "cmd/vpool").
	ours map[string]*listed
	// known holds every package that exists for the rules: the module's,
	// their dependencies and the whole standard library.
	known map[string]bool
}

var (
	graphOnce sync.Once
	graphVal  *graph
	graphErr  error
)

// loadGraph runs `go list` once per test binary.
func loadGraph(t *testing.T) *graph {
	t.Helper()
	graphOnce.Do(func() { graphVal, graphErr = readGraph(repoRoot(t)) })
	if graphErr != nil {
		t.Fatal(graphErr)
	}
	return graphVal
}

func goList(root string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New("archtest: go list " + strings.Join(args, " ") + ": " + err.Error() + ": " + stderr.String())
	}
	return out, nil
}

func readGraph(root string) (*graph, error) {
	out, err := goList(root, "-deps", "-json=ImportPath,Standard,Imports,Deps,Module,Error", "./...")
	if err != nil {
		return nil, err
	}
	g := &graph{ours: map[string]*listed{}, known: map[string]bool{}}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := &listed{}
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, errors.New("archtest: decoding go list: " + err.Error())
		}
		if p.Error != nil {
			return nil, errors.New("archtest: " + p.ImportPath + ": " + p.Error.Err)
		}
		g.known[p.ImportPath] = true
		if rel, ok := internal(p.ImportPath); ok && p.Module != nil && p.Module.Path == module {
			g.ours[rel] = p
		}
	}
	std, err := goList(root, "std")
	if err != nil {
		return nil, err
	}
	for _, p := range strings.Fields(string(std)) {
		g.known[p] = true
	}
	return g, nil
}

// rel turns an import path into the form rules use: module-relative for
// the module's packages, unchanged otherwise.
func rel(path string) string {
	if r, ok := internal(path); ok {
		return r
	}
	return path
}

// match reports whether the rule-form path p matches pattern: "x" is x
// alone, "x/..." is x and everything below it, "..." is every package.
func match(pattern, p string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return under(p, base)
	}
	return p == pattern
}

func matchAny(patterns []string, p string) bool {
	for _, pat := range patterns {
		if match(pat, p) {
			return true
		}
	}
	return false
}

// exists reports whether some known package matches pattern.
func (g *graph) exists(pattern string) bool {
	for p := range g.known {
		if match(pattern, rel(p)) {
			return true
		}
	}
	return false
}

// sortedOurs lists the module's packages in order.
func (g *graph) sortedOurs() []string {
	out := make([]string, 0, len(g.ours))
	for p := range g.ours {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
