package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/imagepool"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// testServer is a running server on loopback with a client.
type testServer struct {
	*Server
	t      testing.TB
	client *http.Client
	st     store.Store
}

// startServer runs a server over st (memstore when nil) until the test
// ends.
func startServer(t testing.TB, st store.Store, edit ...func(*Config)) *testServer {
	t.Helper()
	if st == nil {
		ms := memstore.New()
		t.Cleanup(func() { ms.Close() })
		st = ms
	}
	pool, err := imagepool.New(imagepool.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: st, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", DataDir: t.TempDir(), Version: "test",
		ServerNames: []string{"127.0.0.1", "localhost"}, CAKeyFile: sealKeyFor(t, st), Images: pool}
	for _, e := range edit {
		e(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(func() {
		// connections accepted but never used hold up a graceful shutdown
		client.CloseIdleConnections()
		http.DefaultClient.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &testServer{Server: s, t: t, client: client, st: st}
}

// sealKeys holds one CA seal key file per store: the servers of one
// cluster share it.
var sealKeys sync.Map

func sealKeyFor(t testing.TB, st store.Store) string {
	p, _ := sealKeys.LoadOrStore(st, filepath.Join(t.TempDir(), DefaultCAKeyFile))
	return p.(string)
}

// call does one request and decodes a 2xx body into out (when not nil).
// It returns the status and, for errors, the api.Error.
func (ts *testServer) call(method, path, token string, body any, out any) (int, api.Error) {
	ts.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, _ := json.Marshal(b)
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, "http://"+ts.Addr()+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e api.Error
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(data, &e); err != nil {
			ts.t.Fatalf("%s %s: %d with a non-JSON body %q", method, path, resp.StatusCode, data)
		}
		return resp.StatusCode, e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			ts.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, e
}

// mustCall fails the test unless the call answers want.
func (ts *testServer) mustCall(want int, method, path, token string, body, out any) {
	ts.t.Helper()
	if code, e := ts.call(method, path, token, body, out); code != want {
		ts.t.Fatalf("%s %s = %d %+v, want %d", method, path, code, e, want)
	}
}

func vmReq(name string) api.VMCreateRequest {
	return api.VMCreateRequest{Name: name, Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, Disks: []model.Disk{{Size: model.GiB}}}}
}

// tokenFor creates a token with role in project and returns its secret.
func (ts *testServer) tokenFor(project string, role model.Role) string {
	ts.t.Helper()
	var res api.TokenCreateResponse
	ts.mustCall(201, "POST", "/api/v1/tokens", ts.AdminToken(), api.TokenCreateRequest{Project: project, Role: role}, &res)
	return res.Secret
}

func TestAdminTokenFileAndHashOnly(t *testing.T) {
	ts := startServer(t, nil)
	b, err := os.ReadFile(filepath.Join(ts.cfg.DataDir, "admin.token"))
	if err != nil || strings.TrimSpace(string(b)) != ts.AdminToken() {
		t.Fatalf("admin.token = %q, %v", b, err)
	}
	fi, _ := os.Stat(filepath.Join(ts.cfg.DataDir, "admin.token"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token mode %v", fi.Mode().Perm())
	}
	kvs, _, _ := ts.st.List(context.Background(), store.Root)
	for _, kv := range kvs {
		if bytes.Contains(kv.Value, []byte(ts.AdminToken())) {
			t.Fatalf("the admin secret is stored in clear at %s", kv.Key)
		}
	}
}

func TestAuthMatrix(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	for _, p := range []string{"alpha", "beta"} {
		ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: p}, nil)
	}
	ts.mustCall(201, "POST", "/api/v1/vms?project=beta", admin, vmReq("secret-vm"), nil)
	member := ts.tokenFor("alpha", model.RoleMember)
	viewer := ts.tokenFor("alpha", model.RoleViewer)
	scraper := ts.tokenFor("", model.RoleMetrics)
	var expired api.TokenCreateResponse
	ts.mustCall(201, "POST", "/api/v1/tokens", admin, api.TokenCreateRequest{Project: "alpha", TTL: "1ns"}, &expired)
	join, err := ts.NewJoinToken(context.Background(), time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, joinSecret, _ := strings.Cut(strings.TrimPrefix(join.Token, "vpool1."), ".")

	tests := []struct {
		name, method, path, token string
		body                      any
		want                      int
		code                      string
	}{
		{"no token", "GET", "/api/v1/vms", "", nil, 401, api.CodeUnauthorized},
		{"wrong token", "GET", "/api/v1/vms", "nope", nil, 401, api.CodeUnauthorized},
		{"expired token", "GET", "/api/v1/vms", expired.Secret, nil, 401, api.CodeUnauthorized},
		{"join token as bearer", "GET", "/api/v1/vms", joinSecret, nil, 401, api.CodeUnauthorized},
		{"healthz is public", "GET", "/healthz", "", nil, 200, ""},
		{"openapi is public", "GET", "/api/v1/openapi.json", "", nil, 200, ""},
		{"metrics needs a token", "GET", "/metrics", "", nil, 401, api.CodeUnauthorized},
		{"metrics refuses a member", "GET", "/metrics", member, nil, 403, api.CodeForbidden},
		{"metrics serves an admin", "GET", "/metrics", admin, nil, 200, ""},
		{"metrics serves a metrics token", "GET", "/metrics", scraper, nil, 200, ""},
		{"metrics token reads no API", "GET", "/api/v1/hosts", scraper, nil, 403, api.CodeForbidden},
		{"metrics token in a project", "POST", "/api/v1/tokens", admin, api.TokenCreateRequest{Role: model.RoleMetrics, Project: "alpha"}, 400, api.CodeInvalidField},
		{"member lists own", "GET", "/api/v1/vms", member, nil, 200, ""},
		{"member creates in own", "POST", "/api/v1/vms", member, vmReq("mine"), 201, ""},
		{"member reads other project's VM", "GET", "/api/v1/vms/secret-vm?project=beta", member, nil, 404, api.CodeNotFound},
		{"member deletes other project's VM", "DELETE", "/api/v1/vms/secret-vm?project=beta", member, nil, 404, api.CodeNotFound},
		{"member stops other project's VM", "POST", "/api/v1/vms/secret-vm/stop?project=beta", member, nil, 404, api.CodeNotFound},
		{"member lists other project", "GET", "/api/v1/vms?project=beta", member, nil, 404, api.CodeNotFound},
		{"member lists all projects", "GET", "/api/v1/vms?all-projects=true", member, nil, 403, api.CodeForbidden},
		{"member lists all projects' events", "GET", "/api/v1/events?all-projects=true", member, nil, 403, api.CodeForbidden},
		{"member sees other project", "GET", "/api/v1/projects/beta", member, nil, 404, api.CodeNotFound},
		{"member creates project", "POST", "/api/v1/projects", member, api.ProjectCreateRequest{Name: "x"}, 403, api.CodeForbidden},
		{"member creates token", "POST", "/api/v1/tokens", member, api.TokenCreateRequest{Project: "alpha"}, 403, api.CodeForbidden},
		{"member patches host", "PATCH", "/api/v1/hosts/h1", member, api.HostPatchRequest{}, 403, api.CodeForbidden},
		{"member join token", "POST", "/api/v1/hosts/join-tokens", member, nil, 403, api.CodeForbidden},
		{"member puts policy", "PUT", "/api/v1/cluster/policy", member, model.DefaultPolicy(), 403, api.CodeForbidden},
		{"viewer reads", "GET", "/api/v1/vms/mine", viewer, nil, 200, ""},
		{"viewer creates", "POST", "/api/v1/vms", viewer, vmReq("nope"), 403, api.CodeForbidden},
		{"viewer stops", "POST", "/api/v1/vms/mine/stop", viewer, nil, 403, api.CodeForbidden},
		{"viewer reads other project", "GET", "/api/v1/vms/secret-vm?project=beta", viewer, nil, 404, api.CodeNotFound},
		{"viewer writes other project", "DELETE", "/api/v1/vms/secret-vm?project=beta", viewer, nil, 404, api.CodeNotFound},
		{"admin reads any", "GET", "/api/v1/vms/secret-vm?project=beta", admin, nil, 200, ""},
		{"admin lists all", "GET", "/api/v1/vms?all-projects=true", admin, nil, 200, ""},
		{"admin lists all events", "GET", "/api/v1/events?all-projects=true", admin, nil, 200, ""},
		{"unknown route", "GET", "/api/v1/nothing", admin, nil, 404, api.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, e := ts.call(tt.method, tt.path, tt.token, tt.body, nil)
			if code != tt.want || e.Code != tt.code {
				t.Fatalf("%s %s = %d %+v; want %d %s", tt.method, tt.path, code, e, tt.want, tt.code)
			}
		})
	}
	var list api.VMList
	ts.mustCall(200, "GET", "/api/v1/vms", member, nil, &list)
	if len(list.Items) != 1 || list.Items[0].Name != "mine" {
		t.Fatalf("member sees %+v", list.Items)
	}
	var projects api.ProjectList
	ts.mustCall(200, "GET", "/api/v1/projects", member, nil, &projects)
	if len(projects.Items) != 1 || projects.Items[0].Name != "alpha" {
		t.Fatalf("member sees projects %+v", projects.Items)
	}
}

func TestVMLifecycleThroughAPI(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "p", Quota: model.Quota{VCPUs: 4}}, nil)
	var vm model.VM
	ts.mustCall(201, "POST", "/api/v1/vms?project=p", admin, vmReq("web"), &vm)
	if vm.Status.Phase != model.PhasePending || vm.Spec.Power != model.PowerRunning || vm.Revision == 0 {
		t.Fatalf("created %+v", vm)
	}
	if code, e := ts.call("POST", "/api/v1/vms?project=p", admin, vmReq("web"), nil); code != 409 || e.Code != api.CodeConflict {
		t.Fatalf("duplicate: %d %+v", code, e)
	}
	four := 4
	ts.mustCall(200, "PATCH", "/api/v1/vms/web?project=p", admin, api.VMPatchRequest{VCPUs: &four}, &vm)
	if vm.Spec.VCPUs != 4 {
		t.Fatalf("patched %+v", vm.Spec)
	}
	five := 5
	if code, e := ts.call("PATCH", "/api/v1/vms/web?project=p", admin, api.VMPatchRequest{VCPUs: &five}, nil); code != 403 || e.Code != api.CodeQuotaExceeded || e.Field != "quota.vcpus" {
		t.Fatalf("over-quota resize: %d %+v", code, e)
	}
	ts.mustCall(202, "POST", "/api/v1/vms/web/stop?project=p", admin, nil, &vm)
	if vm.Spec.Power != model.PowerStopped {
		t.Fatalf("stop: %+v", vm.Spec)
	}
	ts.mustCall(202, "POST", "/api/v1/vms/web/restart?project=p", admin, nil, &vm)
	if vm.Spec.Power != model.PowerRunning {
		t.Fatalf("restart of stopped VM should start it: %+v", vm.Spec)
	}
	ts.mustCall(202, "POST", "/api/v1/vms/web/restart?project=p", admin, nil, &vm)
	if vm.Spec.RestartNonce != 1 {
		t.Fatalf("restart nonce %d", vm.Spec.RestartNonce)
	}
	var pv api.ProjectView
	ts.mustCall(200, "GET", "/api/v1/projects/p", admin, nil, &pv)
	if pv.Usage.VMs != 1 || pv.Usage.VCPUs != 4 {
		t.Fatalf("usage %+v", pv.Usage)
	}
	if code, e := ts.call("DELETE", "/api/v1/projects/p", admin, nil, nil); code != 409 {
		t.Fatalf("delete non-empty project: %d %+v", code, e)
	}
	// assigned VM: delete marks it, the agent finishes
	if _, err := ts.Repo().UpdateVM(context.Background(), "p", "web", func(v *model.VM) error { v.Status.Host = "h1"; return nil }); err != nil {
		t.Fatal(err)
	}
	ts.mustCall(202, "DELETE", "/api/v1/vms/web?project=p", admin, nil, &vm)
	if vm.DeletedAt == nil || vm.Status.Phase != model.PhaseDeleting {
		t.Fatalf("delete of assigned VM: %+v", vm)
	}
	if code, _ := ts.call("POST", "/api/v1/vms/web/start?project=p", admin, nil, nil); code != 409 {
		t.Fatalf("start while deleting: %d", code)
	}
	if err := ts.Repo().FinishDeleteVM(context.Background(), "p", "web"); err != nil {
		t.Fatal(err)
	}
	// unassigned VM: deleted at once
	ts.mustCall(201, "POST", "/api/v1/vms?project=p", admin, vmReq("db"), nil)
	ts.mustCall(204, "DELETE", "/api/v1/vms/db?project=p", admin, nil, nil)
	ts.mustCall(404, "GET", "/api/v1/vms/db?project=p", admin, nil, nil)
	ts.mustCall(204, "DELETE", "/api/v1/projects/p", admin, nil, nil)
	if code, _ := ts.call("DELETE", "/api/v1/projects/default", admin, nil, nil); code != 409 {
		t.Fatalf("deleting default project: %d", code)
	}
}

func TestBatchAndDryRun(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "b", Quota: model.Quota{VMs: 5}}, nil)
	spec := vmReq("x").Spec
	var res api.VMBatchResponse
	ts.mustCall(201, "POST", "/api/v1/vms:batch?project=b", admin, api.VMBatchRequest{Prefix: "w", Count: 3, Spec: &spec}, &res)
	if len(res.VMs) != 3 || res.VMs[2].Name != "w-3" {
		t.Fatalf("batch %+v", res.VMs)
	}
	code, e := ts.call("POST", "/api/v1/vms:batch?project=b", admin, api.VMBatchRequest{Prefix: "v", Count: 3, Spec: &spec}, nil)
	if code != 403 || e.Code != api.CodeQuotaExceeded {
		t.Fatalf("over-quota batch: %d %+v", code, e)
	}
	var list api.VMList
	ts.mustCall(200, "GET", "/api/v1/vms?project=b", admin, nil, &list)
	if len(list.Items) != 3 {
		t.Fatalf("a refused batch left %d VMs (want 3)", len(list.Items))
	}
	req := vmReq("dry")
	req.DryRun = true
	if code, e := ts.call("POST", "/api/v1/vms?project=b", admin, req, nil); code != 501 || e.Field != "dryRun" {
		t.Fatalf("dry run without placer: %d %+v", code, e)
	}
	ts2 := startServer(t, nil, func(c *Config) { c.Placer = fakePlacer{} })
	var dr api.DryRunResponse
	ts2.mustCall(200, "POST", "/api/v1/vms", ts2.AdminToken(), req, &dr)
	if !dr.Fits || dr.Host != "h-dry" {
		t.Fatalf("dry run %+v", dr)
	}
	ts2.mustCall(404, "GET", "/api/v1/vms/dry", ts2.AdminToken(), nil, nil)
}

type fakePlacer struct{}

func (fakePlacer) Place(context.Context, *model.VM) (api.DryRunResponse, error) {
	return api.DryRunResponse{Fits: true, Host: "h-dry"}, nil
}

func TestHostsAndPolicy(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ctx := context.Background()
	if _, err := ts.Repo().UpsertHost(ctx, "h1", func(h *model.Host, _ bool) error { h.State = model.HostReady; return nil }); err != nil {
		t.Fatal(err)
	}
	yes := true
	var h model.Host
	ts.mustCall(200, "PATCH", "/api/v1/hosts/h1", admin, api.HostPatchRequest{Labels: map[string]string{"zone": "a"}, Cordoned: &yes}, &h)
	if !h.Cordoned || h.Labels["zone"] != "a" {
		t.Fatalf("patched %+v", h)
	}
	ready := model.HostReady
	if code, _ := ts.call("PATCH", "/api/v1/hosts/h1", admin, api.HostPatchRequest{State: &ready}, nil); code != 200 {
		t.Fatalf("ready→ready refused: %d", code)
	}
	maint := model.HostMaintenance
	ts.mustCall(200, "PATCH", "/api/v1/hosts/h1", admin, api.HostPatchRequest{State: &maint}, &h)
	if code, e := ts.call("PATCH", "/api/v1/hosts/h1", admin, api.HostPatchRequest{State: &ready}, nil); code != 409 {
		t.Fatalf("ready without heartbeat: %d %+v", code, e)
	}
	down := model.HostDown
	if code, e := ts.call("PATCH", "/api/v1/hosts/h1", admin, api.HostPatchRequest{State: &down}, nil); code != 400 || e.Field != "state" {
		t.Fatalf("operator setting down: %d %+v", code, e)
	}
	var hl api.HostList
	ts.mustCall(200, "GET", "/api/v1/hosts", admin, nil, &hl)
	if len(hl.Items) != 1 {
		t.Fatalf("hosts %+v", hl)
	}
	ts.mustCall(404, "GET", "/api/v1/hosts/nope", admin, nil, nil)
	ts.mustCall(204, "DELETE", "/api/v1/hosts/h1", admin, nil, nil)

	pol := model.DefaultPolicy()
	pol.Strategy = "spread"
	ts.mustCall(200, "PUT", "/api/v1/cluster/policy", admin, pol, nil)
	var got model.Policy
	ts.mustCall(200, "GET", "/api/v1/cluster/policy", admin, nil, &got)
	if got.Strategy != "spread" {
		t.Fatalf("policy %+v", got)
	}
	var info api.ClusterInfo
	ts.mustCall(200, "GET", "/api/v1/cluster", admin, nil, &info)
	if info.CAHash != ts.CAHash() || info.Projects != 1 || info.Version != "test" {
		t.Fatalf("cluster %+v", info)
	}
	viewer := ts.tokenFor("default", model.RoleViewer)
	var tl api.TokenList
	ts.mustCall(200, "GET", "/api/v1/tokens", admin, nil, &tl)
	for _, tok := range tl.Items {
		if tok.Hash != "" {
			t.Fatalf("token list leaks hashes: %+v", tok)
		}
	}
	for _, tok := range tl.Items {
		if tok.Role == model.RoleViewer {
			ts.mustCall(204, "DELETE", "/api/v1/tokens/"+tok.ID, admin, nil, nil)
		}
	}
	ts.mustCall(401, "GET", "/api/v1/vms", viewer, nil, nil)
	ts.mustCall(404, "DELETE", "/api/v1/tokens/nope", admin, nil, nil)
}

func TestTwoServersAgreeOnCA(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	a := startServer(t, st)
	b := startServer(t, st)
	if a.CAHash() != b.CAHash() {
		t.Fatal("two servers on one store made two CAs")
	}
	if code, _ := b.call("GET", "/api/v1/vms", a.AdminToken(), nil, nil); code != 200 {
		t.Fatalf("server b refuses server a's admin token: %d", code)
	}
}

func TestMetricsExposeStateAndLatency(t *testing.T) {
	ts := startServer(t, nil)
	ts.mustCall(201, "POST", "/api/v1/vms", ts.AdminToken(), vmReq("m"), nil)
	// the gauges are the watch-fed view's: the create reaches it shortly
	// after its answer (CI once read the metrics before it had)
	var body []byte
	for deadline := time.Now().Add(30 * time.Second); ; {
		req, _ := http.NewRequest("GET", "http://"+ts.Addr()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+ts.AdminToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(body, []byte(`vpool_vms{phase="pending"} 1`)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{`vpool_vms{phase="pending"} 1`, `vpool_hosts{state="ready"} 0`,
		`vpool_api_request_duration_seconds_count{code="201",route="POST /api/v1/vms"} 1`, `vpool_reconcile_errors_total`} {
		if want == "vpool_reconcile_errors_total" {
			ts.Metrics().ReconcileError("test")
			continue
		}
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestTLSUserAPIAndControllersHook(t *testing.T) {
	started := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { // runs after the server's own cleanup
		select {
		case <-stopped:
		default:
			t.Error("controllers were not stopped with the server")
		}
	})
	ts := startServer(t, nil, func(c *Config) {
		c.TLS = true
		c.Controllers = func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			close(stopped)
			return nil
		}
	})
	<-started
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ts.CAPEM())
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer c.CloseIdleConnections()
	if !strings.HasPrefix(ts.URL(), "https://") {
		t.Fatalf("URL %s", ts.URL())
	}
	resp, err := c.Get(ts.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz over TLS: %d", resp.StatusCode)
	}
}

// A dry run runs quota admission as the create would, and says how many
// of the VMs the quota takes.
func TestDryRunQuota(t *testing.T) {
	ts := startServer(t, nil, func(c *Config) { c.Placer = fakePlacer{} })
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "q", Quota: model.Quota{VMs: 10}}, nil)
	spec := vmReq("x").Spec
	ts.mustCall(201, "POST", "/api/v1/vms:batch?project=q", admin, api.VMBatchRequest{Prefix: "old", Count: 9, Spec: &spec}, nil)
	code, e := ts.call("POST", "/api/v1/vms:batch?project=q", admin, api.VMBatchRequest{Prefix: "w", Count: 11, Spec: &spec, DryRun: true}, nil)
	if code != 403 || e.Code != api.CodeQuotaExceeded || e.Field != "quota.vms" || !strings.Contains(e.Message, "takes 1 of these 11") {
		t.Fatalf("dry run of 11 with room for 1: %d %+v", code, e)
	}
	var res []api.DryRunResponse
	ts.mustCall(200, "POST", "/api/v1/vms:batch?project=q", admin, api.VMBatchRequest{Prefix: "w", Count: 1, Spec: &spec, DryRun: true}, &res)
	if len(res) != 1 || !res[0].Fits {
		t.Fatalf("dry run of 1 with room for 1: %+v", res)
	}
}
