package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// recorded is one request the fake server saw.
type recorded struct {
	Pattern string
	Query   string
	Body    string
	Auth    string
	UA      string
}

// routeServer registers every route of api.Routes and answers each with
// the canned body for its pattern (or null).
type routeServer struct {
	mu      sync.Mutex
	reqs    []recorded
	answers map[string]string
	srv     *httptest.Server
}

func newRouteServer(t *testing.T, answers map[string]string) *routeServer {
	t.Helper()
	rs := &routeServer{answers: answers}
	mux := http.NewServeMux()
	for _, r := range api.Routes {
		pattern := r.Method + " " + r.Path
		mux.HandleFunc(pattern, func(w http.ResponseWriter, req *http.Request) {
			body, _ := io.ReadAll(req.Body)
			rs.mu.Lock()
			rs.reqs = append(rs.reqs, recorded{Pattern: req.Pattern, Query: req.URL.RawQuery, Body: string(body),
				Auth: req.Header.Get("Authorization"), UA: req.Header.Get("User-Agent")})
			rs.mu.Unlock()
			a, ok := rs.answers[pattern]
			if !ok {
				a = "null" // decodes into any type
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, a)
		})
	}
	rs.srv = httptest.NewServer(mux)
	t.Cleanup(rs.srv.Close)
	return rs
}

func (rs *routeServer) last(t *testing.T) recorded {
	t.Helper()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	return rs.reqs[len(rs.reqs)-1]
}

func newTestClient(t *testing.T, addr string, opts ...Option) *Client {
	t.Helper()
	opts = append([]Option{WithUserAgent("vpool-test/1"), WithPollInterval(time.Millisecond, 5*time.Millisecond)}, opts...)
	c, err := New(addr, "s3cret", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func spec() model.VMSpec {
	return model.VMSpec{VCPUs: 2, Memory: model.GiB, Disks: []model.Disk{{Name: "root", Size: 10 * model.GiB}}}
}

// calls exercises every method of the client once.
func calls() []struct {
	name    string
	pattern string
	query   string
	body    string
	call    func(context.Context, *Client) error
} {
	type tc = struct {
		name    string
		pattern string
		query   string
		body    string
		call    func(context.Context, *Client) error
	}
	drop := func(_ any, err error) error { return err }
	return append([]tc{
		{"openapi", "GET /api/v1/openapi.json", "", "", func(ctx context.Context, c *Client) error { return drop(c.OpenAPI(ctx)) }},
		{"cluster", "GET /api/v1/cluster", "", "", func(ctx context.Context, c *Client) error { return drop(c.ClusterInfo(ctx)) }},
		{"policy", "GET /api/v1/cluster/policy", "", "", func(ctx context.Context, c *Client) error { return drop(c.Policy(ctx)) }},
		{"set policy", "PUT /api/v1/cluster/policy", "", `{"ratios":{"cpu":2},"strategy":"spread"}`, func(ctx context.Context, c *Client) error {
			return drop(c.SetPolicy(ctx, model.Policy{Ratios: model.Ratios{CPU: 2}, Strategy: "spread"}))
		}},
		{"ha status", "GET /api/v1/ha", "", "", func(ctx context.Context, c *Client) error { return drop(c.HAStatus(ctx)) }},
		{"list projects", "GET /api/v1/projects", "", "", func(ctx context.Context, c *Client) error { return drop(c.ListProjects(ctx)) }},
		{"create project", "POST /api/v1/projects", "", `{"name":"p1","quota":{"vms":3}}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateProject(ctx, api.ProjectCreateRequest{Name: "p1", Quota: model.Quota{VMs: 3}}))
		}},
		{"get project", "GET /api/v1/projects/{name}", "", "", func(ctx context.Context, c *Client) error { return drop(c.GetProject(ctx, "p1")) }},
		{"patch project", "PATCH /api/v1/projects/{name}", "", `{"quota":{"vcpus":8}}`, func(ctx context.Context, c *Client) error {
			return drop(c.PatchProject(ctx, "p1", api.ProjectPatchRequest{Quota: &model.Quota{VCPUs: 8}}))
		}},
		{"delete project", "DELETE /api/v1/projects/{name}", "", "", func(ctx context.Context, c *Client) error { return c.DeleteProject(ctx, "p1") }},
		{"list vms", "GET /api/v1/vms", "all-projects=true", "", func(ctx context.Context, c *Client) error {
			return drop(c.ListVMs(ctx, ListVMsOptions{AllProjects: true}))
		}},
		{"create vm", "POST /api/v1/vms", "project=p1", `{"name":"web1","spec":{"vcpus":2,"memory":1073741824,"disks":[{"name":"root","size":10737418240}],"placement":{},"controls":{},"power":""}}`,
			func(ctx context.Context, c *Client) error {
				return drop(c.CreateVM(ctx, "p1", api.VMCreateRequest{Name: "web1", Spec: spec(), DryRun: true}))
			}},
		{"dry run vm", "POST /api/v1/vms", "", `{"name":"web1","spec":{"vcpus":2,"memory":1073741824,"disks":[{"name":"root","size":10737418240}],"placement":{},"controls":{},"power":""},"dryRun":true}`,
			func(ctx context.Context, c *Client) error {
				return drop(c.DryRunVM(ctx, "", api.VMCreateRequest{Name: "web1", Spec: spec()}))
			}},
		{"batch", "POST /api/v1/vms:batch", "project=p1", `{"prefix":"w","count":3,"spec":{"vcpus":2,"memory":1073741824,"disks":[{"name":"root","size":10737418240}],"placement":{},"controls":{},"power":""}}`,
			func(ctx context.Context, c *Client) error {
				s := spec()
				return drop(c.CreateVMs(ctx, "p1", api.VMBatchRequest{Prefix: "w", Count: 3, Spec: &s}))
			}},
		{"batch dry run", "POST /api/v1/vms:batch", "project=p1", `{"prefix":"w","count":2,"dryRun":true}`,
			func(ctx context.Context, c *Client) error {
				return drop(c.DryRunVMs(ctx, "p1", api.VMBatchRequest{Prefix: "w", Count: 2}))
			}},
		{"get vm", "GET /api/v1/vms/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.GetVM(ctx, "p1", "web1")) }},
		{"patch vm", "PATCH /api/v1/vms/{name}", "project=p1", `{"vcpus":4,"restart":true}`, func(ctx context.Context, c *Client) error {
			four := 4
			return drop(c.PatchVM(ctx, "p1", "web1", api.VMPatchRequest{VCPUs: &four, Restart: true}))
		}},
		{"delete vm", "DELETE /api/v1/vms/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return c.DeleteVM(ctx, "p1", "web1") }},
		{"start vm", "POST /api/v1/vms/{name}/start", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.StartVM(ctx, "p1", "web1")) }},
		{"stop vm", "POST /api/v1/vms/{name}/stop", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.StopVM(ctx, "p1", "web1")) }},
		{"restart vm", "POST /api/v1/vms/{name}/restart", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.RestartVM(ctx, "p1", "web1")) }},
		{"list hosts", "GET /api/v1/hosts", "", "", func(ctx context.Context, c *Client) error { return drop(c.ListHosts(ctx)) }},
		{"get host", "GET /api/v1/hosts/{name}", "", "", func(ctx context.Context, c *Client) error { return drop(c.GetHost(ctx, "h1")) }},
		{"patch host", "PATCH /api/v1/hosts/{name}", "", `{"cordoned":true}`, func(ctx context.Context, c *Client) error {
			yes := true
			return drop(c.PatchHost(ctx, "h1", api.HostPatchRequest{Cordoned: &yes}))
		}},
		{"delete host", "DELETE /api/v1/hosts/{name}", "", "", func(ctx context.Context, c *Client) error { return c.DeleteHost(ctx, "h1") }},
		{"join token", "POST /api/v1/hosts/join-tokens", "", `{"ttl":"2h"}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "2h"}))
		}},
		{"rekey host", "POST /api/v1/hosts/{name}/rekey", "", `{"ttl":"10m"}`, func(ctx context.Context, c *Client) error {
			return drop(c.RekeyHost(ctx, "h1", api.HostRekeyRequest{TTL: "10m"}))
		}},
		{"list tokens", "GET /api/v1/tokens", "", "", func(ctx context.Context, c *Client) error { return drop(c.ListTokens(ctx, "")) }},
		{"create token", "POST /api/v1/tokens", "", `{"project":"p1","role":"viewer","ttl":"24h"}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateToken(ctx, api.TokenCreateRequest{Project: "p1", Role: model.RoleViewer, TTL: "24h"}))
		}},
		{"revoke token", "DELETE /api/v1/tokens/{id}", "", "", func(ctx context.Context, c *Client) error { return c.RevokeToken(ctx, "tok1") }},
		{"list events", "GET /api/v1/events", "project=p1&since=7", "", func(ctx context.Context, c *Client) error { return drop(c.ListEvents(ctx, 7, "p1")) }},
		{"list all events", "GET /api/v1/events", "all-projects=true", "", func(ctx context.Context, c *Client) error { return drop(c.ListEvents(ctx, 0, AllProjects)) }},
		{"migrate vm", "POST /api/v1/migrations", "project=p1", `{"vm":"web1","to":"h2"}`, func(ctx context.Context, c *Client) error {
			return drop(c.MigrateVM(ctx, "p1", api.MigrationRequest{VM: "web1", To: "h2"}))
		}},
		{"list migrations", "GET /api/v1/migrations", "all-projects=true", "", func(ctx context.Context, c *Client) error { return drop(c.ListMigrations(ctx, "", true)) }},
		{"get migration", "GET /api/v1/migrations/{id}", "", "", func(ctx context.Context, c *Client) error { return drop(c.GetMigration(ctx, "m1")) }},
		{"cancel migration", "POST /api/v1/migrations/{id}/cancel", "", "", func(ctx context.Context, c *Client) error { return drop(c.CancelMigration(ctx, "m1")) }},
		{"drain host", "POST /api/v1/hosts/{name}/drain", "", `{"maxConcurrent":3}`, func(ctx context.Context, c *Client) error { return drop(c.DrainHost(ctx, "h1", 3)) }},
		{"undrain host", "POST /api/v1/hosts/{name}/undrain", "", "", func(ctx context.Context, c *Client) error { return drop(c.UndrainHost(ctx, "h1")) }},
		{"balance settings", "GET /api/v1/cluster/balance", "", "", func(ctx context.Context, c *Client) error { return drop(c.BalanceSettings(ctx)) }},
		{"patch balance", "PATCH /api/v1/cluster/balance", "", `{"mode":"automatic","pue":1.2}`, func(ctx context.Context, c *Client) error {
			mode, pue := model.BalanceAutomatic, 1.2
			return drop(c.PatchBalanceSettings(ctx, api.BalanceSettingsPatch{Mode: &mode, PUE: &pue}))
		}},
		{"balance plan", "GET /api/v1/balance/plan", "", "", func(ctx context.Context, c *Client) error { return drop(c.BalancePlan(ctx)) }},
		{"energy", "GET /api/v1/cluster/energy", "vms=true", "", func(ctx context.Context, c *Client) error { return drop(c.Energy(ctx, true)) }},
		{"list snapshots", "GET /api/v1/vms/{name}/snapshots", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.ListSnapshots(ctx, "p1", "web1")) }},
		{"create snapshot", "POST /api/v1/vms/{name}/snapshots", "project=p1", `{"name":"s1","memory":true}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateSnapshot(ctx, "p1", "web1", api.SnapshotCreateRequest{Name: "s1", Memory: true}))
		}},
		{"get snapshot", "GET /api/v1/vms/{name}/snapshots/{snapshot}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.GetSnapshot(ctx, "p1", "web1", "s1")) }},
		{"revert snapshot", "POST /api/v1/vms/{name}/snapshots/{snapshot}/revert", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.RevertSnapshot(ctx, "p1", "web1", "s1")) }},
		{"delete snapshot", "DELETE /api/v1/vms/{name}/snapshots/{snapshot}", "project=p1", "", func(ctx context.Context, c *Client) error { return c.DeleteSnapshot(ctx, "p1", "web1", "s1") }},
		{"add disk", "POST /api/v1/vms/{name}/disks", "project=p1", `{"name":"data","size":1073741824}`, func(ctx context.Context, c *Client) error {
			return drop(c.AddDisk(ctx, "p1", "web1", api.DiskAddRequest{Name: "data", Size: model.GiB}))
		}},
		{"remove disk", "DELETE /api/v1/vms/{name}/disks/{disk}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.RemoveDisk(ctx, "p1", "web1", "data")) }},
		{"console log", "GET /api/v1/vms/{name}/console/log", "project=p1&tail=100", "", func(ctx context.Context, c *Client) error { return drop(c.ConsoleLog(ctx, "p1", "web1", 100)) }},
		{"resize disk", "PATCH /api/v1/vms/{name}/disks/{disk}", "project=p1", `{"size":2147483648}`, func(ctx context.Context, c *Client) error {
			return drop(c.ResizeDisk(ctx, "p1", "web1", "root", 2*model.GiB))
		}},
		{"force stop", "POST /api/v1/vms/{name}/stop", "project=p1", `{"force":true}`, func(ctx context.Context, c *Client) error {
			return drop(c.StopVMWith(ctx, "p1", "web1", api.VMStopRequest{Force: true}))
		}},
		{"list images", "GET /api/v1/images", "", "", func(ctx context.Context, c *Client) error { return drop(c.ListImages(ctx)) }},
		{"get image", "GET /api/v1/images/{name}", "", "", func(ctx context.Context, c *Client) error { return drop(c.GetImage(ctx, "debian-12")) }},
		{"import image", "POST /api/v1/images", "", `{"name":"debian-12","url":"https://example.test/d.qcow2"}`, func(ctx context.Context, c *Client) error {
			return drop(c.ImportImageURL(ctx, api.ImageImportRequest{Name: "debian-12", URL: "https://example.test/d.qcow2"}))
		}},
		{"delete image", "DELETE /api/v1/images/{name}", "", "", func(ctx context.Context, c *Client) error { return c.DeleteImage(ctx, "debian-12") }},
		{"console", "GET /api/v1/vms/{name}/console", "project=p1", "", func(ctx context.Context, c *Client) error {
			conn, err := c.Console(ctx, "p1", "web1")
			if err == nil {
				conn.Close()
			}
			return nil // the route server answers no websocket; the request is what counts
		}},
		{"list networks", "GET /api/v1/networks", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.ListNetworks(ctx, "p1")) }},
		{"create network", "POST /api/v1/networks", "project=p1", `{"name":"lan","spec":{"subnet":"10.1.0.0/24","mtu":1450}}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateNetwork(ctx, "p1", api.NetworkCreateRequest{Name: "lan", Spec: model.NetworkSpec{Subnet: "10.1.0.0/24", MTU: 1450}}))
		}},
		{"get network", "GET /api/v1/networks/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.GetNetwork(ctx, "p1", "lan")) }},
		{"delete network", "DELETE /api/v1/networks/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return c.DeleteNetwork(ctx, "p1", "lan") }},
		{"list addresses", "GET /api/v1/networks/{name}/addresses", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.ListAddresses(ctx, "p1", "lan")) }},
		{"allocate address", "POST /api/v1/networks/{name}/addresses", "project=p1", `{"owner":"lb/web"}`, func(ctx context.Context, c *Client) error {
			return drop(c.AllocateAddress(ctx, "p1", "lan", api.AddressRequest{Owner: "lb/web"}))
		}},
		{"release address", "DELETE /api/v1/networks/{name}/addresses/{ip}", "owner=lb%2Fweb&project=p1", "", func(ctx context.Context, c *Client) error {
			return c.ReleaseAddress(ctx, "p1", "lan", "10.1.0.5", "lb/web")
		}},
		{"list groups", "GET /api/v1/secgroups", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.ListSecurityGroups(ctx, "p1")) }},
		{"create group", "POST /api/v1/secgroups", "project=p1", `{"name":"web"}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateSecurityGroup(ctx, "p1", api.SecurityGroupCreateRequest{Name: "web"}))
		}},
		{"get group", "GET /api/v1/secgroups/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.GetSecurityGroup(ctx, "p1", "web")) }},
		{"delete group", "DELETE /api/v1/secgroups/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return c.DeleteSecurityGroup(ctx, "p1", "web") }},
		{"add rule", "POST /api/v1/secgroups/{name}/rules", "project=p1", `{"direction":"ingress","protocol":"tcp","portMin":80}`, func(ctx context.Context, c *Client) error {
			return drop(c.AddRule(ctx, "p1", "web", model.Rule{Direction: "ingress", Protocol: "tcp", PortMin: 80}))
		}},
		{"delete rule", "DELETE /api/v1/secgroups/{name}/rules/{id}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.DeleteRule(ctx, "p1", "web", "r1")) }},
		{"add nic", "POST /api/v1/vms/{name}/nics", "project=p1", `{"network":"lan"}`, func(ctx context.Context, c *Client) error {
			return drop(c.AddNIC(ctx, "p1", "web1", model.NIC{Network: "lan"}))
		}},
		{"patch nic", "PATCH /api/v1/vms/{name}/nics/{nic}", "project=p1", `{"qos":{"ingressKbps":1000}}`, func(ctx context.Context, c *Client) error {
			return drop(c.PatchNIC(ctx, "p1", "web1", "nic0", api.NICPatchRequest{QoS: &model.NICQoS{IngressKbps: 1000}}))
		}},
		{"remove nic", "DELETE /api/v1/vms/{name}/nics/{nic}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.RemoveNIC(ctx, "p1", "web1", "nic0")) }},
		{"audit", "GET /api/v1/audit", "kind=decision&limit=5&project=p1", "", func(ctx context.Context, c *Client) error {
			return drop(c.Audit(ctx, AuditQuery{Project: "p1", Kind: "decision", Limit: 5}))
		}},
		{"audit records", "GET /api/v1/audit/records", "from=7", "", func(ctx context.Context, c *Client) error { return drop(c.AuditRecords(ctx, 7, 0)) }},
		{"audit head", "GET /api/v1/audit/head", "", "", func(ctx context.Context, c *Client) error { return drop(c.AuditHead(ctx)) }},
		{"audit key", "GET /api/v1/audit/key", "", "", func(ctx context.Context, c *Client) error { return drop(c.AuditKey(ctx)) }},
		{"history", "GET /api/v1/cluster/history", "points=60", "", func(ctx context.Context, c *Client) error { return drop(c.History(ctx, 60)) }},
		{"compliance", "GET /api/v1/compliance", "all-projects=true&breaches=true", "", func(ctx context.Context, c *Client) error {
			return drop(c.Compliance(ctx, "", true, true))
		}},
		{"metering settings", "GET /api/v1/cluster/metering", "", "", func(ctx context.Context, c *Client) error { return drop(c.MeteringSettings(ctx)) }},
		{"set metering", "PATCH /api/v1/cluster/metering", "", `{"sitesGPerKWh":{"eu":56}}`, func(ctx context.Context, c *Client) error {
			return drop(c.PatchMeteringSettings(ctx, api.MeteringSettingsPatch{Sites: map[string]float64{"eu": 56}}))
		}},
		{"usage", "GET /api/v1/usage", "from=2025-03-01T00%3A00%3A00Z&project=p1&vms=true", "", func(ctx context.Context, c *Client) error {
			return drop(c.Usage(ctx, UsageQuery{Project: "p1", From: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), VMs: true}))
		}},
		{"list lbs", "GET /api/v1/lbs", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.ListLBs(ctx, "p1")) }},
		{"create lb", "POST /api/v1/lbs", "project=p1", `{"name":"web","spec":{"network":"","listen":0,"algorithm":"roundrobin","members":{},"healthCheck":{}}}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateLB(ctx, "p1", api.LBCreateRequest{Name: "web", Spec: model.LBSpec{Algorithm: "roundrobin"}}))
		}},
		{"get lb", "GET /api/v1/lbs/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.GetLB(ctx, "p1", "web")) }},
		{"patch lb", "PATCH /api/v1/lbs/{name}", "project=p1", `{"algorithm":"leastconn"}`, func(ctx context.Context, c *Client) error {
			alg := "leastconn"
			return drop(c.PatchLB(ctx, "p1", "web", api.LBPatchRequest{Algorithm: &alg}))
		}},
		{"delete lb", "DELETE /api/v1/lbs/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return c.DeleteLB(ctx, "p1", "web") }},
		{"list scaling groups", "GET /api/v1/groups", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.ListGroups(ctx, "p1")) }},
		{"create scaling group", "POST /api/v1/groups", "project=p1", `{"name":"web","spec":{"template":{"vcpus":0,"memory":0,"placement":{},"controls":{},"power":""},"min":1,"max":3}}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateGroup(ctx, "p1", api.GroupCreateRequest{Name: "web", Spec: model.GroupSpec{Min: 1, Max: 3}}))
		}},
		{"get scaling group", "GET /api/v1/groups/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.GetGroup(ctx, "p1", "web")) }},
		{"patch scaling group", "PATCH /api/v1/groups/{name}", "project=p1", `{"max":5}`, func(ctx context.Context, c *Client) error {
			max := 5
			return drop(c.PatchGroup(ctx, "p1", "web", api.GroupPatchRequest{Max: &max}))
		}},
		{"delete scaling group", "DELETE /api/v1/groups/{name}", "project=p1", "", func(ctx context.Context, c *Client) error { return c.DeleteGroup(ctx, "p1", "web") }},
		{"list members", "GET /api/v1/cluster/members", "", "", func(ctx context.Context, c *Client) error { return drop(c.Members(ctx)) }},
		{"add member", "POST /api/v1/cluster/members", "", `{"name":"s4","ttl":"2h"}`, func(ctx context.Context, c *Client) error {
			return drop(c.AddMember(ctx, api.MemberAddRequest{Name: "s4", TTL: "2h"}))
		}},
		{"remove member", "DELETE /api/v1/cluster/members/{name}", "", "", func(ctx context.Context, c *Client) error { return c.RemoveMember(ctx, "s4") }},
	}, backupCalls()...)

}

// TestEveryRoute calls every method and checks the request each sends,
// and that together they cover api.Routes exactly.
func TestEveryRoute(t *testing.T) {
	rs := newRouteServer(t, nil)
	c := newTestClient(t, rs.srv.URL)
	hit := map[string]bool{}
	for _, tc := range calls() {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(context.Background(), c); err != nil {
				t.Fatalf("call: %v", err)
			}
			got := rs.last(t)
			hit[got.Pattern] = true
			want := recorded{Pattern: tc.pattern, Query: tc.query, Body: tc.body, Auth: "Bearer s3cret", UA: "vpool-test/1"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
	for _, r := range api.Routes {
		if !hit[r.Method+" "+r.Path] {
			t.Errorf("route %s %s has no client method", r.Method, r.Path)
		}
	}
}

func TestDecodesAnswers(t *testing.T) {
	vm := model.VM{Meta: model.Meta{Name: "web1", Project: "p1"}, Spec: spec(), Status: model.VMStatus{Phase: model.PhaseRunning, Host: "h1"}}
	vmJSON, _ := json.Marshal(vm)
	rs := newRouteServer(t, map[string]string{
		"GET /api/v1/vms/{name}":          string(vmJSON),
		"GET /api/v1/vms":                 `{"items":[` + string(vmJSON) + `],"revision":42}`,
		"POST /api/v1/vms/{name}/start":   ``,
		"POST /api/v1/vms:batch":          `[{"host":"h1","fits":true},{"fits":false}]`,
		"GET /api/v1/openapi.json":        `{"openapi":"3.0.3"}`,
		"POST /api/v1/hosts/join-tokens":  `{"token":"vpool1.abc.def","agentAddr":"127.0.0.1:8441","expiresAt":"2030-01-01T00:00:00Z"}`,
		"POST /api/v1/vms/{name}/restart": `{"name":"web1","spec":{"vcpus":1,"memory":1,"power":"running","restartNonce":5},"status":{"phase":"running"}}`,
	})
	c := newTestClient(t, rs.srv.URL)
	ctx := context.Background()
	got, err := c.GetVM(ctx, "p1", "web1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&vm, got); diff != "" {
		t.Errorf("GetVM (-want +got):\n%s", diff)
	}
	list, err := c.ListVMs(ctx, ListVMsOptions{Project: "p1"})
	if err != nil || list.Revision != 42 || len(list.Items) != 1 {
		t.Errorf("ListVMs = %+v, %v", list, err)
	}
	if v, err := c.StartVM(ctx, "p1", "web1"); err != nil || v != nil {
		t.Errorf("StartVM with an empty answer = %v, %v; want nil, nil", v, err)
	}
	if v, err := c.RestartVM(ctx, "p1", "web1"); err != nil || v.Spec.RestartNonce != 5 {
		t.Errorf("RestartVM = %+v, %v", v, err)
	}
	if res, err := c.DryRunVMs(ctx, "p1", api.VMBatchRequest{Prefix: "w", Count: 2}); err != nil || len(res) != 2 || !res[0].Fits || res[1].Fits {
		t.Errorf("DryRunVMs = %+v, %v", res, err)
	}
	if doc, err := c.OpenAPI(ctx); err != nil || string(doc) != `{"openapi":"3.0.3"}` {
		t.Errorf("OpenAPI = %q, %v", doc, err)
	}
	if jt, err := c.CreateJoinToken(ctx, api.JoinTokenRequest{}); err != nil || jt.Token != "vpool1.abc.def" {
		t.Errorf("CreateJoinToken = %+v, %v", jt, err)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   *api.Error
	}{
		{"api error", 400, `{"code":"invalid_field","message":"must be at least 16MiB","field":"spec.memory"}`,
			&api.Error{Code: "invalid_field", Message: "must be at least 16MiB", Field: "spec.memory"}},
		{"api error without code", 404, `{"message":"vm web1 not found"}`,
			&api.Error{Code: "not_found", Message: "vm web1 not found"}},
		{"plain text", 502, "bad gateway\n", &api.Error{Code: "unavailable", Message: "server answered 502: bad gateway"}},
		{"empty", 401, "", &api.Error{Code: "unauthorized", Message: "server answered 401: Unauthorized"}},
		{"html", 500, "<html>oops</html>", &api.Error{Code: "internal", Message: "server answered 500: <html>oops</html>"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL)
			_, err := c.GetVM(context.Background(), "", "web1")
			var got *api.Error
			if !errors.As(err, &got) {
				t.Fatalf("err = %v (%T), want *api.Error", err, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTransportErrorIsWrapped(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	c := newTestClient(t, addr)
	_, err := c.ClusterInfo(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "client: GET /api/v1/cluster: ") {
		t.Fatalf("err = %v", err)
	}
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		t.Errorf("a transport error must not look like an API error")
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		addr, wantBase string
		wantErr        error
	}{
		{"", DefaultAddr, nil},
		{"127.0.0.1:9000", "http://127.0.0.1:9000", nil},
		{"https://vpool.example:8440/", "https://vpool.example:8440", nil},
		{"http://h:1/prefix/", "http://h:1/prefix", nil},
		{"ftp://h:1", "", ErrBadAddr},
		{"http://", "", ErrBadAddr},
		{"http://h:1/?x=1", "", ErrBadAddr},
	}
	for _, tc := range tests {
		c, err := New(tc.addr, "")
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("New(%q) err = %v, want %v", tc.addr, err, tc.wantErr)
			continue
		}
		if err == nil && c.Addr() != tc.wantBase {
			t.Errorf("New(%q).Addr() = %q, want %q", tc.addr, c.Addr(), tc.wantBase)
		}
	}
	if _, err := New("https://h:1", "", WithCACert([]byte("not pem"))); !errors.Is(err, ErrBadCA) {
		t.Errorf("bad CA: err = %v, want ErrBadCA", err)
	}
}

func TestTLSWithCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"version":"v1","server":"s1","store":"embedded","caHash":"x"}`)
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c := newTestClient(t, srv.URL, WithCACert(ca))
	info, err := c.ClusterInfo(context.Background())
	if err != nil || info.Version != "v1" {
		t.Fatalf("ClusterInfo over TLS = %+v, %v", info, err)
	}
	untrusting := newTestClient(t, srv.URL)
	if _, err := untrusting.ClusterInfo(context.Background()); err == nil {
		t.Fatal("a client without the CA must refuse the server's certificate")
	}
}

func TestWaitVM(t *testing.T) {
	// The server walks the VM through phases, one per GET, with a 503 in
	// the middle that WaitVM must poll through, then answers 404.
	steps := []string{"pending", "503", "scheduling", "scheduling", "creating", "running", "404"}
	var mu sync.Mutex
	i := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		step := steps[min(i, len(steps)-1)]
		i++
		mu.Unlock()
		switch step {
		case "503":
			w.WriteHeader(503)
			_, _ = io.WriteString(w, `{"code":"unavailable","message":"no leader"}`)
		case "404":
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"code":"not_found","message":"vm web1 not found"}`)
		default:
			_, _ = fmt.Fprintf(w, `{"name":"web1","spec":{"vcpus":1,"memory":1,"power":"running"},"status":{"phase":%q}}`, step)
		}
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	var seen []string
	vm, err := c.WaitVM(context.Background(), "", "web1", InPhase(model.PhaseRunning, model.PhaseFailed), func(v *model.VM) {
		seen = append(seen, string(v.Status.Phase))
	})
	if err != nil || vm.Status.Phase != model.PhaseRunning {
		t.Fatalf("WaitVM = %+v, %v", vm, err)
	}
	if diff := cmp.Diff([]string{"pending", "scheduling", "creating", "running"}, seen); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	vm, err = c.WaitVM(context.Background(), "", "web1", Gone, nil)
	if err != nil || vm != nil {
		t.Errorf("WaitVM(Gone) = %v, %v", vm, err)
	}
	_, err = c.WaitVM(context.Background(), "", "web1", InPhase(model.PhaseRunning), nil)
	if !IsNotFound(err) {
		t.Errorf("WaitVM on a missing VM: err = %v, want not_found", err)
	}
}

func TestWaitVMContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"name":"web1","status":{"phase":"pending"}}`)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	polls := 0
	vm, err := c.WaitVM(ctx, "", "web1", func(*model.VM) bool {
		polls++
		if polls == 3 {
			cancel()
		}
		return false
	}, nil)
	if !errors.Is(err, context.Canceled) || vm == nil || vm.Status.Phase != model.PhasePending {
		t.Fatalf("WaitVM after cancel = %v, %v", vm, err)
	}
}

func TestFollowEvents(t *testing.T) {
	// First connection: two events then the stream ends; the client must
	// reconnect with since=2 and get the third; then we cancel.
	var mu sync.Mutex
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		n := len(queries)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-ndjson")
		fl := w.(http.Flusher)
		if n == 1 {
			_, _ = io.WriteString(w, `{"id":1,"kind":"vm.created","object":"vm/p1/a","message":"created"}`+"\n\n")
			_, _ = io.WriteString(w, `{"id":2,"kind":"vm.phase","object":"vm/p1/a","from":"pending","to":"scheduling"}`+"\n")
			fl.Flush()
			return
		}
		// Repeats event 2 (must be dropped), then sends 3 and holds.
		_, _ = io.WriteString(w, `{"id":2,"kind":"vm.phase"}`+"\n"+`{"id":3,"kind":"vm.phase","to":"running"}`+"\n")
		fl.Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, errs := c.FollowEvents(ctx, 0, "p1")
	var ids []int64
	for ev := range events {
		ids = append(ids, ev.ID)
		if ev.ID == 3 {
			cancel()
		}
	}
	if err, ok := <-errs; ok || err != nil {
		t.Errorf("errs after cancel = %v, %v; want closed", err, ok)
	}
	if diff := cmp.Diff([]int64{1, 2, 3}, ids); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"follow=true&project=p1", "follow=true&project=p1&since=2"}
	sort.Strings(queries)
	if diff := cmp.Diff(want, queries[:2]); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
}

func TestFollowEventsRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
		_, _ = io.WriteString(w, `{"code":"unauthorized","message":"bad token"}`)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL)
	events, errs := c.FollowEvents(context.Background(), 0, "")
	for range events {
		t.Error("no event expected")
	}
	err := <-errs
	if !HasCode(err, api.CodeUnauthorized) {
		t.Errorf("err = %v, want unauthorized", err)
	}
}

func TestFollowEventsFirstConnectFails(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	c := newTestClient(t, addr)
	events, errs := c.FollowEvents(context.Background(), 0, "")
	for range events {
	}
	if err := <-errs; err == nil {
		t.Error("want an error when the server cannot be reached")
	}
}
