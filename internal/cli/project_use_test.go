package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// `project use` keeps the project in the client config; later commands
// work in it, --project still wins for one command, --clear forgets it.
func TestProjectUse(t *testing.T) {
	f := newFake(t)
	seed(f)
	dir := t.TempDir()
	if err := WriteConfig(filepath.Join(dir, "vpool", "config.json"), Config{Addr: f.srv.URL, Token: goodToken}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) result { return invocation{configDir: dir}.run(t, args...) }
	if res := run("project", "use", "nope"); res.code != 1 || !strings.Contains(res.stderr, "not found") {
		t.Fatalf("use of a missing project: code %d, stderr %q", res.code, res.stderr)
	}
	if res := run("project", "use", "team-a"); res.code != 0 || !strings.Contains(res.stdout, "now working in project team-a") {
		t.Fatalf("use: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	cfg, err := ReadConfig(filepath.Join(dir, "vpool", "config.json"))
	if err != nil || cfg.Project != "team-a" || cfg.Token != goodToken {
		t.Fatalf("config after use: %+v %v", cfg, err)
	}
	if res := run("project", "use"); !strings.Contains(res.stdout, "team-a (from config") {
		t.Errorf("show: %q", res.stdout)
	}
	run("vm", "list")
	run("--project", "default", "vm", "list")
	run("project", "use", "--clear")
	run("vm", "list")
	var queries []string
	for _, c := range f.seen() {
		if c.Pattern == "GET /api/v1/vms" {
			queries = append(queries, c.Query)
		}
	}
	if got := strings.Join(queries, " "); got != "limit=500&project=team-a limit=500&project=default limit=500" {
		t.Fatalf("vm list queries = %q, want the project in use, then --project, then none", got)
	}
}
