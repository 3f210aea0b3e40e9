package cli

import (
	"strings"
	"testing"
)

// TestOutputGolden renders every read command in its formats and compares
// with testdata/*.golden. Regenerate with: go test ./internal/cli -update
func TestOutputGolden(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
		code   int
	}{
		{"vm-list", []string{"vm", "list"}, 0},
		{"vm-list-all", []string{"vm", "list", "--all-projects"}, 0},
		{"vm-list-filtered", []string{"vm", "list", "-A", "--phase", "failed"}, 0},
		{"vm-list-host", []string{"vm", "list", "-A", "--host", "h1"}, 0},
		{"vm-list-json", []string{"vm", "list", "-o", "json"}, 0},
		{"vm-list-yaml", []string{"vm", "list", "-o", "yaml"}, 0},
		{"vm-show", []string{"vm", "show", "web1"}, 0},
		{"vm-show-failed", []string{"--project", "team-a", "vm", "show", "batch1"}, 0},
		{"vm-show-yaml", []string{"vm", "show", "db", "-o", "yaml"}, 0},
		{"vm-create", []string{"vm", "create", "new1", "--memory", "2GiB", "--disk", "20GiB"}, 0},
		{"vm-create-json", []string{"vm", "create", "new1", "-o", "json"}, 0},
		{"vm-create-batch", []string{"vm", "create", "w", "--count", "3"}, 0},
		{"vm-dry-run", []string{"vm", "create", "new1", "--dry-run"}, 0},
		{"vm-dry-run-batch", []string{"vm", "create", "w", "--count", "2", "--dry-run"}, 0},
		{"vm-dry-run-batch-misfit", []string{"vm", "create", "w", "--count", "3", "--dry-run"}, 1},
		{"vm-dry-run-batch-json", []string{"vm", "create", "w", "--count", "2", "--dry-run", "-o", "json"}, 0},
		{"vm-resize", []string{"vm", "resize", "web1", "--vcpus", "8"}, 0},
		{"vm-stop", []string{"vm", "stop", "web1", "db"}, 0},
		{"vm-stop-json", []string{"vm", "stop", "db", "-o", "json"}, 0},
		{"host-list", []string{"host", "list"}, 0},
		{"host-list-json", []string{"host", "list", "-o", "json"}, 0},
		{"host-show", []string{"host", "show", "h1"}, 0},
		{"host-show-h2", []string{"host", "show", "h2"}, 0},
		{"host-label", []string{"host", "label", "h1", "rack=r7"}, 0},
		{"host-cordon", []string{"host", "cordon", "h1", "h2"}, 0},
		{"host-join-token", []string{"host", "join-token"}, 0},
		{"host-rekey", []string{"host", "rekey", "h1"}, 0},
		{"host-rekey-unknown", []string{"host", "rekey", "nope"}, 1},
		{"project-list", []string{"project", "list"}, 0},
		{"project-list-yaml", []string{"project", "list", "-o", "yaml"}, 0},
		{"project-show", []string{"project", "show", "team-a"}, 0},
		{"project-create", []string{"project", "create", "team-b", "--quota-vms", "3"}, 0},
		{"token-list", []string{"token", "list"}, 0},
		{"token-create", []string{"--project", "team-a", "token", "create"}, 0},
		{"token-create-json", []string{"--project", "team-a", "token", "create", "-o", "json"}, 0},
		{"events", []string{"events"}, 0},
		{"events-since", []string{"events", "--since", "3m"}, 0},
		{"events-json", []string{"events", "--since", "11", "-o", "json"}, 0},
		{"cluster-info", []string{"cluster", "info"}, 0},
		{"cluster-info-json", []string{"cluster", "info", "-o", "json"}, 0},
		{"policy-show", []string{"cluster", "policy", "show"}, 0},
		{"policy-set", []string{"cluster", "policy", "set", "--memory-ratio", "1.5", "--weight", "spread=3"}, 0},
		{"ha-status", []string{"ha", "status"}, 0},
		{"policy-set-ha-fence-command", []string{"cluster", "policy", "set", "--ha-fence-command", "4s"}, 0},
		{"version", []string{"version"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			f := newFake(t)
			seed(f)
			res := f.cli(t, tc.args...)
			if res.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", res.code, tc.code, res.stderr)
			}
			out := strings.ReplaceAll(res.stdout, f.srv.URL, "http://FAKE")
			golden(t, tc.golden, out)
		})
	}
}
