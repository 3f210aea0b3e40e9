package cli

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestUsageErrors: bad flags, units and arguments exit 2 with a message
// naming the flag, and reach no server.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // first stderr line
	}{
		{"bad memory unit", []string{"vm", "create", "x", "--memory", "12XB"},
			`error: --memory: "12XB" is not a size (use a number with a unit: B, KiB, MiB, GiB, TiB)`},
		{"negative memory", []string{"vm", "create", "x", "--memory", "-1GiB"}, `error: --memory: "-1GiB" is negative`},
		{"bad disk size", []string{"vm", "create", "x", "--disk", "ten"},
			`error: --disk: "ten" is not a size (use a number with a unit: B, KiB, MiB, GiB, TiB)`},
		{"disk without size", []string{"vm", "create", "x", "--disk", "name=data"},
			`error: --disk: "name=data" has no size (e.g. --disk 10GiB or --disk size=10GiB,tier=ssd)`},
		{"disk unknown key", []string{"vm", "create", "x", "--disk", "size=1G,speed=fast"},
			`error: --disk: unknown key "speed" in "size=1G,speed=fast" (use size, name, pool, tier, encrypted)`},
		{"bad label", []string{"vm", "create", "x", "--label", "web"}, `error: --label: "web" is not key=value`},
		{"bad memory limit", []string{"vm", "create", "x", "--memory-limit", "lots"},
			`error: --memory-limit: "lots" is not a size (use a number with a unit: B, KiB, MiB, GiB, TiB)`},
		{"negative cpu reservation", []string{"vm", "create", "x", "--cpu-reservation", "-1"},
			`error: --cpu-reservation: -1 is not a CPU amount (e.g. 0.5 or 2)`},
		{"count zero", []string{"vm", "create", "x", "--count", "0"}, `error: --count: must be at least 1 (got 0)`},
		{"not an int", []string{"vm", "create", "x", "--vcpus", "two"},
			`error: invalid argument "two" for "--vcpus" flag: strconv.ParseInt: parsing "two": invalid syntax`},
		{"unknown flag", []string{"vm", "list", "--colour"}, `error: unknown flag: --colour`},
		{"unknown command", []string{"frobnicate"}, `error: unknown command "frobnicate" for "vpool"`},
		{"unknown subcommand", []string{"vm", "frob"}, `error: unknown command "frob" for "vpool vm"`},
		{"missing name", []string{"vm", "create"}, `error: vpool vm create wants one VM name (got 0 arguments)`},
		{"too many names", []string{"vm", "show", "a", "b"}, `error: vpool vm show wants one VM name (got 2 arguments)`},
		{"no names", []string{"vm", "stop"}, `error: vpool vm stop wants at least one VM name`},
		{"bad output", []string{"vm", "list", "-o", "xml"}, `error: --output: "xml" is not a format (use table, json or yaml)`},
		{"resize nothing", []string{"vm", "resize", "web1"}, `error: vm resize: nothing to change: give at least one flag (--vcpus, --memory)`},
		{"resize bad memory", []string{"vm", "resize", "web1", "--memory", "4 gigs"},
			`error: --memory: "4 gigs" is not a size (use a number with a unit: B, KiB, MiB, GiB, TiB)`},
		{"quota bad unit", []string{"project", "create", "p", "--quota-memory", "1XB"},
			`error: --quota-memory: "1XB" is not a size (use a number with a unit: B, KiB, MiB, GiB, TiB)`},
		{"set-quota nothing", []string{"project", "set-quota", "p"},
			`error: project set-quota: nothing to change: give at least one flag (--quota-vcpus, --quota-memory, --quota-disk, --quota-vms)`},
		{"bad host label", []string{"host", "label", "h1", "zone"}, `error: host label: "zone" is neither KEY=VALUE nor KEY-`},
		{"bad since", []string{"events", "--since", "yesterday"},
			`error: --since: "yesterday" is not an event ID, a duration (e.g. 10m) or a time (RFC 3339)`},
		{"bad weight", []string{"cluster", "policy", "set", "--weight", "x"}, `error: --weight: "x" is not name=number`},
		{"policy nothing", []string{"cluster", "policy", "set"},
			`error: cluster policy set: nothing to change: give at least one flag (--cpu-ratio, --memory-ratio, --disk-ratio, --strategy, --weight, --migration-downtime-limit, --migration-multifd-channels, --ha-*)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			seed(f)
			res := f.cli(t, tc.args...)
			if res.code != 2 {
				t.Errorf("exit code = %d, want 2 (stderr %q)", res.code, res.stderr)
			}
			if got := lines(res.stderr)[0]; got != tc.want {
				t.Errorf("stderr:\n got %s\nwant %s", got, tc.want)
			}
			if !strings.Contains(res.stderr, "--help' for usage.") {
				t.Errorf("stderr lacks the usage hint: %q", res.stderr)
			}
			for _, c := range f.seen() {
				if !strings.HasPrefix(c.Pattern, "GET ") {
					t.Errorf("a usage error must change nothing, but %s was sent", c.Pattern)
				}
			}
		})
	}
}

// TestAPIErrors: the server's refusals exit 1 with its message and field.
func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name  string
		token string
		args  []string
		want  []string // stderr lines
	}{
		{"invalid field", goodToken, []string{"vm", "create", "x", "--memory", "8MiB"},
			[]string{"error: spec.memory: must be at least 16MiB (got 8MiB); give a size with a unit, e.g. 512MiB or 2GiB"}},
		{"conflict", goodToken, []string{"vm", "create", "web1"}, []string{"error: name: vm web1 already exists in project default"}},
		{"not found", goodToken, []string{"vm", "show", "nope"}, []string{"error: vm nope not found in project default"}},
		{"unauthorized", "bad-token", []string{"vm", "list"},
			[]string{"error: missing or unknown bearer token (check --token, VPOOL_TOKEN or the config file)"}},
		{"host with vms", goodToken, []string{"host", "delete", "h1"}, []string{"error: host h1 still has 1 VMs"}},
		{"one of several fails", goodToken, []string{"vm", "stop", "web1", "ghost", "db", "--no-wait"},
			[]string{"error: vm ghost: vm ghost not found in project default", "error: 1 of 3 VMs failed"}},
		{"several hosts", goodToken, []string{"host", "delete", "h2", "h9"},
			[]string{"error: host h9: host h9 not found", "error: 1 of 2 hosts failed"}},
		{"dry run does not fit", goodToken, []string{"vm", "create", "huge", "--dry-run"}, nil},
		{"fence command before suspect", goodToken, []string{"cluster", "policy", "set", "--ha-fence-command", "3s"},
			[]string{"error: ha.fenceCommandMillis: must be at least ha.suspectMillis (4000 ms): a host is fenced only once it is suspect (its lease expired); raise it, or 0 for the fence timeout (got 3000)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			seed(f)
			if tc.name == "dry run does not fit" {
				f.dryRun.Fits = false
				f.dryRun.Explanation.Summary = "no host has 64 free vCPUs"
				tc.want = []string{"error: vm huge would not fit: no host has 64 free vCPUs"}
			}
			res := invocation{}.run(t, append([]string{"--addr", f.srv.URL, "--token", tc.token}, tc.args...)...)
			if res.code != 1 {
				t.Errorf("exit code = %d, want 1", res.code)
			}
			if got := lines(res.stderr); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("stderr:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestServerDown(t *testing.T) {
	srv := httptest.NewServer(nil)
	addr := srv.URL
	srv.Close()
	res := invocation{}.run(t, "--addr", addr, "vm", "list")
	if res.code != 1 {
		t.Errorf("exit code = %d, want 1", res.code)
	}
	if !strings.Contains(res.stderr, "connection refused") || !strings.Contains(res.stderr, "is the server running?") {
		t.Errorf("stderr = %q, want the cause and a hint", res.stderr)
	}
	// version still works, and says the server is unreachable.
	res = invocation{}.run(t, "--addr", addr, "version")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "client: 1.2.3\nserver: unreachable: ") {
		t.Errorf("version with the server down: exit %d, stdout %q", res.code, res.stdout)
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"vm"}, {"vm", "create", "--help"}, {"cluster", "policy"}} {
		res := invocation{}.run(t, args...)
		if res.code != 0 || !strings.Contains(res.stdout, "Usage:") {
			t.Errorf("%v: exit %d, stdout %q", args, res.code, res.stdout)
		}
	}
}
