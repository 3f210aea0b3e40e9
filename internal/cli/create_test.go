package cli

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// TestFlagsToRequests checks the request each command line sends.
func TestFlagsToRequests(t *testing.T) {
	spec := func(mut func(*model.VMSpec)) model.VMSpec {
		s := model.VMSpec{VCPUs: 1, Memory: model.GiB, Power: model.PowerRunning}
		if mut != nil {
			mut(&s)
		}
		return s
	}
	u := func(v int) *int { return &v }
	b := func(v model.Bytes) *model.Bytes { return &v }
	yes, no := true, false
	tests := []struct {
		name    string
		args    []string
		pattern string
		query   string
		want    any // decoded into a fresh value of the same type
	}{
		{"minimal create", []string{"vm", "create", "new1"}, "POST /api/v1/vms", "",
			&api.VMCreateRequest{Name: "new1", Spec: spec(nil)}},
		{"create with sizes", []string{"vm", "create", "new1", "--vcpus", "2", "--memory", "1.5GiB", "--disk", "10GiB", "--disk", "size=100G,name=data,tier=ssd,pool=fast,encrypted"},
			"POST /api/v1/vms", "", &api.VMCreateRequest{Name: "new1", Spec: spec(func(s *model.VMSpec) {
				s.VCPUs, s.Memory = 2, 1536*model.MiB
				s.Disks = []model.Disk{{Size: 10 * model.GiB}, {Name: "data", Size: 100 * model.GiB, Tier: "ssd", Pool: "fast", Encrypted: true}}
			})}},
		{"create with everything", []string{"--project", "team-a", "vm", "create", "db1", "--vcpus", "4", "--memory", "8GiB",
			"--image", "debian-12", "--network", "lan", "--label", "app=db", "--label", "tier=1", "--require", "zone=a", "--prefer", "ssd=true",
			"--isolation-domain", "pci", "--affinity-group", "dbs", "--affinity", "anti-affinity", "--max-per-host", "1", "--host", "h1",
			"--cpu-shares", "2048", "--cpu-reservation", "0.5", "--cpu-limit", "1.5", "--memory-reservation", "2GiB", "--memory-limit", "8GiB",
			"--disk-iops", "500", "--disk-bps", "100MiB", "--ha-priority", "900", "--stopped"},
			"POST /api/v1/vms", "project=team-a", &api.VMCreateRequest{Name: "db1", Spec: model.VMSpec{
				VCPUs: 4, Memory: 8 * model.GiB, Image: "debian-12", NICs: []model.NIC{{Network: "lan"}},
				Labels: map[string]string{"app": "db", "tier": "1"}, Power: model.PowerStopped, HAPriority: 900,
				Placement: model.Placement{RequiredLabels: map[string]string{"zone": "a"}, PreferredLabels: map[string]string{"ssd": "true"},
					IsolationDomain: "pci", AffinityGroup: "dbs", Affinity: "anti-affinity", MaxPerHost: 1, Host: "h1"},
				Controls: model.Controls{CPUShares: 2048, CPUReservation: 500, CPULimit: 1500, MemoryReservation: 2 * model.GiB,
					MemoryLimit: 8 * model.GiB, DiskIOPS: 500, DiskBps: 100 << 20}}}},
		{"create with an HA level", []string{"vm", "create", "new1", "--ha-priority", "high"}, "POST /api/v1/vms", "",
			&api.VMCreateRequest{Name: "new1", Spec: spec(func(s *model.VMSpec) { s.HA = model.HAHigh })}},
		{"create with a watchdog", []string{"vm", "create", "new1", "--watchdog", "pause"}, "POST /api/v1/vms", "",
			&api.VMCreateRequest{Name: "new1", Spec: spec(func(s *model.VMSpec) { s.Watchdog = &model.Watchdog{Action: model.WatchdogPause} })}},
		{"create with HA off", []string{"vm", "create", "new1", "--ha-priority", "off"}, "POST /api/v1/vms", "",
			&api.VMCreateRequest{Name: "new1", Spec: spec(func(s *model.VMSpec) { s.HA = model.HAOff })}},
		{"batch", []string{"vm", "create", "web", "--count", "3", "--memory", "512MiB"}, "POST /api/v1/vms:batch", "",
			&api.VMBatchRequest{Prefix: "web", Count: 3, Spec: &model.VMSpec{VCPUs: 1, Memory: 512 * model.MiB, Power: model.PowerRunning}}},
		{"dry run", []string{"vm", "create", "web1", "--dry-run"}, "POST /api/v1/vms", "",
			&api.VMCreateRequest{Name: "web1", Spec: spec(nil), DryRun: true}},
		{"batch dry run", []string{"vm", "create", "web", "--count", "2", "--dry-run"}, "POST /api/v1/vms:batch", "",
			&api.VMBatchRequest{Prefix: "web", Count: 2, Spec: &model.VMSpec{VCPUs: 1, Memory: model.GiB, Power: model.PowerRunning}, DryRun: true}},
		{"resize", []string{"vm", "resize", "web1", "--vcpus", "4", "--memory", "4GiB", "--restart"}, "PATCH /api/v1/vms/{name}", "",
			&api.VMPatchRequest{VCPUs: u(4), Memory: b(4 * model.GiB), Restart: true}},
		{"resize memory only", []string{"vm", "resize", "web1", "--memory", "2G"}, "PATCH /api/v1/vms/{name}", "",
			&api.VMPatchRequest{Memory: b(2 * model.GiB)}},
		{"stop", []string{"vm", "stop", "web1"}, "POST /api/v1/vms/{name}/stop", "", nil},
		{"delete in project", []string{"--project", "team-a", "vm", "delete", "batch1"}, "DELETE /api/v1/vms/{name}", "project=team-a", nil},
		{"cordon", []string{"host", "cordon", "h1"}, "PATCH /api/v1/hosts/{name}", "", &api.HostPatchRequest{Cordoned: &yes}},
		{"uncordon", []string{"host", "uncordon", "h2"}, "PATCH /api/v1/hosts/{name}", "", &api.HostPatchRequest{Cordoned: &no}},
		{"label", []string{"host", "label", "h1", "rack=r7", "ssd-"}, "PATCH /api/v1/hosts/{name}", "",
			&api.HostPatchRequest{Labels: map[string]string{"zone": "a", "rack": "r7"}}},
		{"join token", []string{"host", "join-token", "--ttl", "2h"}, "POST /api/v1/hosts/join-tokens", "", &api.JoinTokenRequest{TTL: "2h0m0s", Uses: 1}},
		{"join token uses", []string{"host", "join-token", "--uses", "5"}, "POST /api/v1/hosts/join-tokens", "", &api.JoinTokenRequest{Uses: 5}},
		{"rekey", []string{"host", "rekey", "h1", "--ttl", "30m"}, "POST /api/v1/hosts/{name}/rekey", "", &api.HostRekeyRequest{TTL: "30m0s"}},
		{"project create", []string{"project", "create", "team-b", "--description", "B", "--quota-vcpus", "8", "--quota-memory", "16GiB", "--quota-disk", "1TiB", "--quota-vms", "4"},
			"POST /api/v1/projects", "", &api.ProjectCreateRequest{Name: "team-b", Description: "B",
				Quota: model.Quota{VCPUs: 8, Memory: 16 * model.GiB, Disk: model.TiB, VMs: 4}}},
		{"set quota keeps the rest", []string{"project", "set-quota", "team-a", "--quota-vms", "50"}, "PATCH /api/v1/projects/{name}", "",
			&api.ProjectPatchRequest{Quota: &model.Quota{VCPUs: 32, Memory: 64 * model.GiB, VMs: 50}}},
		{"token create", []string{"--project", "team-a", "token", "create", "--role", "viewer", "--ttl", "24h"}, "POST /api/v1/tokens", "",
			&api.TokenCreateRequest{Project: "team-a", Role: model.RoleViewer, TTL: "24h0m0s"}},
		{"metrics token", []string{"--project", "team-a", "token", "create", "--role", "metrics"}, "POST /api/v1/tokens", "",
			&api.TokenCreateRequest{Role: model.RoleMetrics}},
		{"token revoke", []string{"token", "revoke", "tok-a"}, "DELETE /api/v1/tokens/{id}", "", nil},
		{"policy set", []string{"cluster", "policy", "set", "--cpu-ratio", "8", "--strategy", "spread", "--weight", "balance=2"}, "PUT /api/v1/cluster/policy", "",
			&model.Policy{Ratios: model.Ratios{CPU: 8, Memory: 1, Disk: 1}, Strategy: "spread", Weights: map[string]float64{"balance": 2}}},
		{"policy set multifd", []string{"cluster", "policy", "set", "--migration-multifd-channels", "1"}, "PUT /api/v1/cluster/policy", "",
			&model.Policy{Ratios: model.Ratios{CPU: 4, Memory: 1, Disk: 1}, Strategy: "binpack", MigrationMultifdChannels: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			seed(f)
			res := f.cli(t, tc.args...)
			if res.code != 0 {
				t.Fatalf("exit %d, stderr: %s", res.code, res.stderr)
			}
			got := f.lastWrite(t)
			if got.Pattern != tc.pattern || got.Query != tc.query {
				t.Errorf("request = %s ?%s, want %s ?%s", got.Pattern, got.Query, tc.pattern, tc.query)
			}
			if tc.want == nil {
				return
			}
			// Decode the body into a value of the wanted type and compare.
			gotV := newOfType(tc.want)
			if err := json.Unmarshal([]byte(got.Body), gotV); err != nil {
				t.Fatalf("body %s: %v", got.Body, err)
			}
			if diff := cmp.Diff(tc.want, gotV); diff != "" {
				t.Errorf("body (-want +got):\n%s\nraw: %s", diff, got.Body)
			}
		})
	}
}

func newOfType(v any) any {
	switch v.(type) {
	case *api.VMCreateRequest:
		return &api.VMCreateRequest{}
	case *api.VMBatchRequest:
		return &api.VMBatchRequest{}
	case *api.VMPatchRequest:
		return &api.VMPatchRequest{}
	case *api.HostPatchRequest:
		return &api.HostPatchRequest{}
	case *api.JoinTokenRequest:
		return &api.JoinTokenRequest{}
	case *api.HostRekeyRequest:
		return &api.HostRekeyRequest{}
	case *api.ProjectCreateRequest:
		return &api.ProjectCreateRequest{}
	case *api.ProjectPatchRequest:
		return &api.ProjectPatchRequest{}
	case *api.TokenCreateRequest:
		return &api.TokenCreateRequest{}
	case *model.Policy:
		return &model.Policy{}
	}
	panic("newOfType: add a case")
}
