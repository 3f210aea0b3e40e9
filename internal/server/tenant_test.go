package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in    string
		keep, drop  []string
		withheldMsg bool
	}{
		{"plain error stays", "qemu: storage pool \"fast\" is not configured on this host", []string{"storage pool \"fast\" is not configured"}, nil, false},
		{"command line withheld", plantedError, []string{"qemu: QEMU exited during start-up", "failed to load romfile"},
			[]string{"/etc/shadow", "/usr/bin", "-machine", "/var/lib", "qmp.sock"}, true},
		{"migration address", "target listens at " + plantedAddr, []string{"target listens at [address]"}, []string{"SECRETKEY", "10.0.0.5"}, false},
		{"dial error", plantedNote, []string{"connection refused"}, []string{"10.0.0.5", "/var/lib"}, false},
		{"json blockdev", `open {"filename":"/srv/pools/a/disk.qcow2"} failed`, []string{"failed"}, []string{"/srv/pools"}, false},
		{"long text is cut", strings.Repeat("x", 5000), nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := redact(tt.in)
			for _, k := range tt.keep {
				if !strings.Contains(got, k) {
					t.Errorf("redact dropped %q: %q", k, got)
				}
			}
			for _, d := range tt.drop {
				if strings.Contains(got, d) {
					t.Errorf("redact kept %q: %q", d, got)
				}
			}
			if strings.Contains(got, "command line withheld") != tt.withheldMsg {
				t.Errorf("withheld note: %q", got)
			}
			if len(got) > maxTenantText+len("…") {
				t.Errorf("%d bytes", len(got))
			}
			if again := redact(got); again != got {
				t.Errorf("not idempotent: %q → %q", got, again)
			}
		})
	}
}

func tenantGet(t *testing.T, s *Server, secret, path string, out any) {
	t.Helper()
	code, body := callWith(s, "GET", path, secret)
	if code != 200 {
		t.Fatalf("GET %s = %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatal(err)
	}
}

// TestTenantSeesItsOwnFigures: a project member's /cluster, hosts and
// energy count its project only; an admin's are the cluster's.
func TestTenantSeesItsOwnFigures(t *testing.T) {
	s := newFixtureServer(t)
	var info api.ClusterInfo
	tenantGet(t, s, memberSecret, "/api/v1/cluster", &info)
	if info.VMs != 3 || info.Projects != 1 || info.Leader != "" {
		t.Errorf("member's cluster info %+v: want alpha's 3 VMs, 1 project, no leader address", info)
	}
	tenantGet(t, s, s.AdminToken(), "/api/v1/cluster", &info)
	if info.VMs != 4 || info.Projects != 4 {
		t.Errorf("admin's cluster info %+v: want 4 VMs in 4 projects", info)
	}
	var hosts api.HostList
	tenantGet(t, s, memberSecret, "/api/v1/hosts", &hosts)
	for _, h := range hosts.Items {
		want := map[string]int{"h1": 2}[h.Name]
		if h.VMs != want || h.Usage != (model.HostUsage{}) || h.Address != "" || h.AgentVer != "" {
			t.Errorf("member sees host %s with %d VMs (want %d), usage %+v, address %q, agent %q", h.Name, h.VMs, want, h.Usage, h.Address, h.AgentVer)
		}
		if h.Name == "h1" && (h.Allocated.CPUs != 2 || len(h.Pools) != 1 || h.Pools[0].Free != 0 || h.Capacity.CPUs != 16) {
			t.Errorf("member's h1: allocated %+v (want alpha's 2 vCPUs), pools %+v, capacity %+v", h.Allocated, h.Pools, h.Capacity)
		}
	}
	var h model.Host
	tenantGet(t, s, otherSecret, "/api/v1/hosts/h1", &h)
	if h.VMs != 1 || h.Usage.CPUPercent != 0 {
		t.Errorf("beta's member sees h1 with %d VMs, usage %+v; want 1 and none", h.VMs, h.Usage)
	}
	tenantGet(t, s, s.AdminToken(), "/api/v1/hosts/h1", &h)
	if h.Usage.CPUPercent != 77 || h.Address == "" {
		t.Errorf("admin's h1 lost its inventory: %+v", h)
	}
	// The error a member reads still says what went wrong.
	var vm model.VM
	tenantGet(t, s, memberSecret, "/api/v1/vms/vm1", &vm)
	if !strings.HasPrefix(vm.Status.LastError, "qemu: QEMU exited during start-up") || strings.Contains(vm.Status.LastError, "/etc/shadow") {
		t.Errorf("member's last error %q", vm.Status.LastError)
	}
	tenantGet(t, s, s.AdminToken(), "/api/v1/vms/vm1?project=alpha", &vm)
	if vm.Status.LastError != plantedError {
		t.Errorf("admin's last error was redacted: %q", vm.Status.LastError)
	}
	var m model.Migration
	tenantGet(t, s, memberSecret, "/api/v1/migrations/m1", &m)
	if m.TargetAddr != "" || m.Source != "h1" || m.Target != "h2" {
		t.Errorf("member's migration: %+v", m)
	}
}
