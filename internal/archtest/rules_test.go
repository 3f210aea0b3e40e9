package archtest

import (
	"fmt"
	"strings"
	"testing"
)

// importRule is one architecture promise about imports. Paths are
// module-relative for the module's packages ("internal/store") and full
// otherwise ("net/http", "go.etcd.io/..."); "x/..." means x and every
// package below it. Every path a rule names must exist: a rule about a
// package that was renamed or never written would pass forever.
type importRule struct {
	name   string
	from   []string // packages the rule binds
	except []string // packages of from it does not bind
	// deny lists what they must not import; only, when set, is all the
	// module's packages they may import (besides their own subtree).
	deny, only []string
	// stdlibOnly: nothing outside the standard library.
	stdlibOnly bool
	// direct checks the packages' own imports; by default the rule holds
	// for everything they import, transitively.
	direct bool
	// todo, when set, is known to fail until the named work lands: the
	// rule is still checked for existence, and its violations are
	// reported by a skip with this text instead of a failure. Delete the
	// field to enable the rule.
	todo string
}

// decision packages decide from a snapshot and return a plan: the
// simulator and the server run the very same code.
var decision = []string{
	"internal/scheduler/...", "internal/balance/...", "internal/energy/...",
	"internal/simulate/...", "internal/trace/...", "internal/ha/...",
}

// ioPackages is what a decision package must never reach, directly or not.
var ioPackages = []string{
	"internal/store/...", "internal/state/...", "internal/server/...", "internal/client/...",
	"internal/agent/...", "internal/hypervisor/...", "internal/qmp/...", "internal/controller/...",
	"internal/devenv/...", "net/http", "os/exec", "go.etcd.io/...",
}

// testSupport is what only tests may import.
var testSupport = []string{
	"testing", "internal/testenv", "internal/store/storetest", "internal/store/etcdstore/etcdtest",
	"internal/hypervisor/hypervisortest", "internal/hypervisor/qemu/guest",
}

var rules = []importRule{
	{
		name: "decision packages reach no store, server, client, agent, hypervisor, HTTP, exec or etcd",
		from: decision, except: []string{"internal/simulate/simcmd"}, deny: ioPackages,
	},
	{
		name: "the sim command reaches no store, server, client, agent, hypervisor, HTTP, exec or etcd",
		from: []string{"internal/simulate/simcmd"}, deny: ioPackages,
	},
	{
		name: "the model is the shared vocabulary: standard library only",
		from: []string{"internal/model"}, stdlibOnly: true,
	},
	{
		name: "netvirt renders and applies host networking from plans: standard library only (no store, server, agent or driver)",
		from: []string{"internal/netvirt"}, stdlibOnly: true,
	},
	{
		name: "only internal/store/etcdstore imports etcd",
		from: []string{"..."}, except: []string{"internal/store/etcdstore/..."},
		deny: []string{"go.etcd.io/..."}, direct: true,
	},
	{
		name: "only internal/hypervisor/qemu imports internal/qmp",
		from: []string{"..."}, except: []string{"internal/hypervisor/qemu/...", "internal/qmp/..."},
		deny: []string{"internal/qmp/..."}, direct: true,
	},
	{
		name: "internal/cli reaches only internal/client, internal/api, internal/model and the audit verifier",
		from: []string{"internal/cli/..."}, only: []string{"internal/client", "internal/api", "internal/model", "internal/audit"},
	},
	{
		name: "metering's core (integration, rollups, reports) is pure: the standard library and the model only",
		from: []string{"internal/metering"}, only: []string{"internal/model"}, deny: []string{"net/http", "os/exec"},
	},
	{
		name: "the audit verifier (chain, signatures) is pure: the standard library and the model only, so the CLI can verify without trusting a server",
		from: []string{"internal/audit"}, only: []string{"internal/model"}, deny: []string{"net/http", "os/exec"},
	},
	{
		name: "the agent speaks the API: it never reaches the store, the state layer, the server or the controllers",
		from: []string{"internal/agent/..."},
		deny: []string{"internal/store/...", "internal/state/...", "internal/server/...", "internal/controller/...", "go.etcd.io/..."},
	},
	{
		name: "the fleet simulator speaks the agent protocol: it never reaches the store, the state layer, the server, the controllers or a driver",
		from: []string{"internal/fleet/..."},
		deny: []string{"internal/store/...", "internal/state/...", "internal/server/...", "internal/controller/...",
			"internal/hypervisor/...", "internal/agent/...", "go.etcd.io/..."},
	},
	{
		name: "the watch cache reaches only the store's interface",
		from: []string{"internal/watchcache/..."}, only: []string{"internal/store", "internal/model"},
	},
	{
		name: "the state layer stores decisions without importing the scheduler",
		from: []string{"internal/state/..."}, deny: []string{"internal/scheduler/..."},
	},
	{
		name: "the binary links no test support",
		from: []string{"cmd/..."}, deny: testSupport,
	},
}

// violation is one import a rule refuses.
type violation struct {
	rule, pkg, imp string
	todo           string
}

func (v violation) String() string {
	return fmt.Sprintf("%s imports %s: %s", v.pkg, v.imp, v.rule)
}

// missing lists the paths of r that name no existing package.
func (r *importRule) missing(g *graph) []string {
	var out []string
	for _, list := range [][]string{r.from, r.except, r.deny, r.only} {
		for _, p := range list {
			if p == "..." {
				continue // every package of the module
			}
			if !g.exists(p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// check returns the imports of the module's packages that r refuses.
func (r *importRule) check(g *graph) []violation {
	var out []violation
	for _, name := range g.sortedOurs() {
		if !matchAny(r.from, name) || matchAny(r.except, name) {
			continue
		}
		p := g.ours[name]
		imps := p.Deps
		if r.direct {
			imps = p.Imports
		}
		for _, full := range imps {
			if r.refuses(g, full) {
				out = append(out, violation{rule: r.name, pkg: name, imp: rel(full), todo: r.todo})
			}
		}
	}
	return out
}

// refuses reports whether r forbids its packages to import full.
func (r *importRule) refuses(g *graph, full string) bool {
	imp := rel(full)
	if r.stdlibOnly && !isStdlib(full) {
		return true
	}
	if matchAny(r.deny, imp) {
		return true
	}
	if len(r.only) > 0 {
		if _, ours := g.ours[imp]; ours && !matchAny(r.only, imp) && !matchAny(r.from, imp) {
			return true
		}
	}
	return false
}

// TestImportRules checks every rule against the module's build graph
// (`go list -deps`): transitive imports unless a rule says direct.
func TestImportRules(t *testing.T) {
	g := loadGraph(t)
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			if m := r.missing(g); len(m) > 0 {
				t.Fatalf("the rule names packages that do not exist: %s", strings.Join(m, ", "))
			}
			vs := r.check(g)
			if r.todo != "" {
				if len(vs) == 0 {
					t.Fatalf("the rule holds now: delete its todo (%s) to enable it", r.todo)
				}
				t.Skipf("not yet enforced (%s): %d violations, e.g. %s", r.todo, len(vs), vs[0])
			}
			for _, v := range vs {
				t.Error(v)
			}
		})
	}
}

// fakeGraph is a module of one package, pkg, that imports imp directly
// (direct) or through an intermediate package of the module.
func fakeGraph(pkg, imp string, direct bool) *graph {
	full := func(p string) string {
		if strings.HasPrefix(p, "internal/") || strings.HasPrefix(p, "cmd/") {
			return module + "/" + p
		}
		return p
	}
	g := &graph{ours: map[string]*listed{}, known: map[string]bool{}}
	p := &listed{ImportPath: full(pkg), Deps: []string{full(imp)}}
	if direct {
		p.Imports = []string{full(imp)}
	} else {
		mid := "internal/intermediate"
		p.Imports = []string{full(mid)}
		p.Deps = append(p.Deps, full(mid))
		g.ours[mid] = &listed{ImportPath: full(mid), Imports: []string{full(imp)}, Deps: []string{full(imp)}}
	}
	g.ours[pkg] = p
	if _, ok := internal(full(imp)); ok {
		g.ours[imp] = &listed{ImportPath: full(imp)}
	}
	return g
}

// TestRulesCatchViolations proves the rules are not vacuous, that they
// follow transitive imports, and that they refuse nothing legitimate.
func TestRulesCatchViolations(t *testing.T) {
	for _, tc := range []struct {
		pkg, imp string
		direct   bool
		refused  bool
	}{
		{"internal/scheduler", "internal/store", false, true},
		{"internal/balance", "net/http", false, true},
		{"internal/simulate", "internal/controller", false, true},
		{"internal/trace", "os/exec", false, true},
		{"internal/energy", "go.etcd.io/etcd/client/v3", false, true},
		{"internal/simulate/simcmd", "internal/hypervisor/qemu", false, true},
		{"internal/model", "github.com/google/go-cmp/cmp", false, true},
		{"internal/server", "go.etcd.io/etcd/client/v3", true, true},
		{"internal/controller", "internal/qmp", true, true},
		{"internal/cli", "internal/server", false, true},
		{"internal/agent", "internal/store/etcdstore", false, true},
		{"internal/state", "internal/scheduler", false, true},
		{"cmd/vpool", "testing", false, true},
		{"cmd/vpool", "internal/testenv", false, true},
		// Allowed.
		{"internal/simulate", "internal/scheduler", false, false},
		{"internal/scheduler", "internal/model", true, false},
		{"internal/cli", "internal/client", true, false},
		{"internal/cli", "github.com/spf13/cobra", true, false},
		{"internal/store/etcdstore", "go.etcd.io/etcd/client/v3", true, false},
		{"internal/server", "go.etcd.io/etcd/client/v3", false, false}, // through the store: only direct use is etcdstore's
		{"internal/hypervisor/qemu", "internal/qmp", true, false},
		{"internal/controller", "internal/scheduler", true, false},
	} {
		how := "transitively"
		if tc.direct {
			how = "directly"
		}
		t.Run(tc.pkg+" "+how+" "+tc.imp, func(t *testing.T) {
			g := fakeGraph(tc.pkg, tc.imp, tc.direct)
			var got []violation
			for _, r := range rules {
				for _, v := range r.check(g) {
					if v.pkg == tc.pkg {
						got = append(got, v)
					}
				}
			}
			if tc.refused && len(got) == 0 {
				t.Errorf("no rule refuses it")
			}
			if !tc.refused && len(got) > 0 {
				t.Errorf("refused: %v", got)
			}
		})
	}
}

// TestRuleNamingMissingPackageFails: a rule about a package that does
// not exist is reported, whichever list names it.
func TestRuleNamingMissingPackageFails(t *testing.T) {
	g := fakeGraph("internal/scheduler", "internal/model", true)
	g.known[module+"/internal/scheduler"] = true
	g.known[module+"/internal/model"] = true
	g.known["net/http"] = true
	for _, tc := range []struct {
		name string
		r    importRule
		want []string
	}{
		{"all exist", importRule{from: []string{"internal/scheduler/...", "..."}, deny: []string{"net/http"}}, nil},
		{"from", importRule{from: []string{"internal/ha/..."}, deny: []string{"net/http"}}, []string{"internal/ha/..."}},
		{"deny", importRule{from: []string{"internal/scheduler"}, deny: []string{"internal/stor"}}, []string{"internal/stor"}},
		{"only", importRule{from: []string{"internal/scheduler"}, only: []string{"internal/modle"}}, []string{"internal/modle"}},
		{"except", importRule{from: []string{"..."}, except: []string{"net/htp"}}, []string{"net/htp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.missing(g); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("missing = %v, want %v", got, tc.want)
			}
		})
	}
}
