package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// testAgent is a host agent's HTTP side, as a test drives it.
type testAgent struct {
	t      *testing.T
	addr   string
	host   string
	client *http.Client // mutual TLS once joined
	cert   tls.Certificate
}

// pinnedClient trusts only a server presenting the CA with caHash.
func pinnedClient(caHash string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify:    true, // verified by the pin below
		VerifyPeerCertificate: pki.VerifyPinned(caHash),
	}}}
}

func agentDo(t *testing.T, c *http.Client, method, url, bearer string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("decode %q: %v", data, err)
		}
	}
	return resp.StatusCode
}

// joinAgent joins host with a fresh join token and returns an agent with
// a mutual-TLS client.
func joinAgent(t *testing.T, ts *testServer, host string) *testAgent {
	t.Helper()
	jt, err := ts.NewJoinToken(context.Background(), time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, code := joinWith(t, ts, jt.Token, host)
	if code != 200 {
		t.Fatalf("join: %d", code)
	}
	return a
}

// joinWith joins host with token; the agent is nil unless the status is
// 200.
func joinWith(t *testing.T, ts *testServer, token, host string) (*testAgent, int) {
	t.Helper()
	caHash, _, err := pki.ParseJoinToken(token)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(host)
	if err != nil {
		t.Fatal(err)
	}
	var jr api.JoinResponse
	url := "https://" + ts.AgentAddr() + "/agent/v1/join"
	if code := agentDo(t, pinnedClient(caHash), "POST", url, token, api.JoinRequest{Host: host, CSRPEM: string(csrPEM)}, &jr); code != 200 {
		return nil, code
	}
	cert, err := tls.X509KeyPair([]byte(jr.CertPEM), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(jr.CAPEM))
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "127.0.0.1"}}}
	return &testAgent{t: t, addr: ts.AgentAddr(), host: host, client: c, cert: cert}, 200
}

func (a *testAgent) do(method, path string, body, out any) int {
	a.t.Helper()
	return agentDo(a.t, a.client, method, "https://"+a.addr+path, "", body, out)
}

func (a *testAgent) beat(reports ...api.VMReport) {
	a.t.Helper()
	hb := api.Heartbeat{Host: a.host, Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB, Disk: 100 * model.GiB},
		Driver: "sim", Labels: map[string]string{"zone": "agent-said"}, VMs: reports}
	var res api.HeartbeatResponse
	if code := a.do("PUT", "/agent/v1/heartbeat", hb, &res); code != 200 || res.LeaseTTLSeconds == 0 {
		a.t.Fatalf("heartbeat: %d %+v", code, res)
	}
}

func TestJoinRefusals(t *testing.T) {
	ts := startServer(t, nil)
	jt, _ := ts.NewJoinToken(context.Background(), time.Hour, 8)
	_, csr, _ := pki.NewKeyAndCSR("h1")
	c := pinnedClient(ts.CAHash())
	url := "https://" + ts.AgentAddr() + "/agent/v1/join"
	other, _ := pki.NewCA(time.Now())
	tests := []struct {
		name, bearer string
		req          api.JoinRequest
		want         int
	}{
		{"no token", "", api.JoinRequest{Host: "h1", CSRPEM: string(csr)}, 401},
		{"user token", ts.AdminToken(), api.JoinRequest{Host: "h1", CSRPEM: string(csr)}, 401},
		{"wrong secret", pki.FormatJoinToken(ts.CAHash(), "nope"), api.JoinRequest{Host: "h1", CSRPEM: string(csr)}, 401},
		{"other cluster", pki.FormatJoinToken(other.Hash(), "x"), api.JoinRequest{Host: "h1", CSRPEM: string(csr)}, 401},
		{"bad host name", jt.Token, api.JoinRequest{Host: "H_1", CSRPEM: string(csr)}, 400},
		{"bad csr", jt.Token, api.JoinRequest{Host: "h1", CSRPEM: "junk"}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := agentDo(t, c, "POST", url, tt.bearer, tt.req, nil); code != tt.want {
				t.Fatalf("got %d, want %d", code, tt.want)
			}
		})
	}
	// without a client certificate, nothing but join answers
	if code := agentDo(t, c, "PUT", "https://"+ts.AgentAddr()+"/agent/v1/heartbeat", "", api.Heartbeat{Host: "h1"}, nil); code != 401 {
		t.Fatalf("heartbeat without a certificate: %d", code)
	}
	// a client that does not pin the CA cannot even connect
	if _, err := http.Get("https://" + ts.AgentAddr() + "/agent/v1/assignments"); err == nil {
		t.Fatal("plain TLS client accepted the agent listener's certificate")
	}
}

func TestAgentProtocolEndToEnd(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	admin := ts.AdminToken()
	a := joinAgent(t, ts, "h1")
	a.beat()
	var h model.Host
	ts.mustCall(200, "GET", "/api/v1/hosts/h1", admin, nil, &h)
	if h.State != model.HostReady || h.Capacity.CPUs != 8 || h.Labels["zone"] != "agent-said" {
		t.Fatalf("host after first heartbeat %+v", h)
	}
	if _, err := ts.st.Get(ctx, store.AliveKey("h1")); err != nil {
		t.Fatalf("no liveness key: %v", err)
	}
	// operator fields survive heartbeats
	yes := true
	ts.mustCall(200, "PATCH", "/api/v1/hosts/h1", admin, api.HostPatchRequest{Labels: map[string]string{"zone": "operator-said"}, Cordoned: &yes}, nil)
	a.beat()
	ts.mustCall(200, "GET", "/api/v1/hosts/h1", admin, nil, &h)
	if h.Labels["zone"] != "operator-said" || !h.Cordoned {
		t.Fatalf("heartbeat clobbered operator fields: %+v", h)
	}
	// a heartbeat naming another host is refused
	if code := a.do("PUT", "/agent/v1/heartbeat", api.Heartbeat{Host: "h2"}, nil); code != 403 {
		t.Fatalf("impersonation: %d", code)
	}

	// assignments
	ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("v1"), nil)
	ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("v2"), nil)
	place := func(name string) {
		t.Helper()
		if _, err := ts.Repo().UpdateVM(ctx, "default", name, func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = "h1", model.PhaseCreating
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	place("v1")
	var as api.Assignments
	a.do("GET", "/agent/v1/assignments", nil, &as)
	if len(as.VMs) != 1 || as.VMs[0].Name != "v1" || as.Revision == 0 {
		t.Fatalf("assignments %+v", as)
	}
	// nothing changes: a short wait answers the same set
	var same api.Assignments
	a.do("GET", "/agent/v1/assignments?after="+itoa(as.Revision)+"&wait=50ms", nil, &same)
	if len(same.VMs) != 1 {
		t.Fatalf("idle long poll %+v", same)
	}
	// a long poll wakes up when a VM lands on the host
	got := make(chan api.Assignments, 1)
	go func() {
		var next api.Assignments
		a.do("GET", "/agent/v1/assignments?after="+itoa(same.Revision)+"&wait=30s", nil, &next)
		got <- next
	}()
	place("v2")
	next := <-got
	if len(next.VMs) != 2 || next.Revision <= same.Revision {
		t.Fatalf("woken long poll %+v", next)
	}

	// status reports
	var vm model.VM
	if code := a.do("PUT", "/agent/v1/vms/default/v1/status", api.VMReport{Phase: model.PhaseRunning}, &vm); code != 200 || vm.Status.Phase != model.PhaseRunning || vm.Status.StartedAt == nil {
		t.Fatalf("status: %d %+v", code, vm.Status)
	}
	ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("elsewhere"), nil)
	if code := a.do("PUT", "/agent/v1/vms/default/elsewhere/status", api.VMReport{Phase: model.PhaseRunning}, nil); code != 409 {
		t.Fatalf("report on a VM of another host: %d", code)
	}
	// heartbeat reports carry usage only: they never move the phase, so a
	// heartbeat built before a status report cannot roll it back
	a.beat(api.VMReport{Project: "default", Name: "v2", Phase: model.PhaseRunning, Error: "stale"})
	ts.mustCall(200, "GET", "/api/v1/vms/v2", admin, nil, &vm)
	if vm.Status.Phase != model.PhaseCreating || vm.Status.LastError != "" {
		t.Fatalf("heartbeat report changed the phase or error: %+v", vm.Status)
	}
	// delete: the API marks, the agent's Gone finishes and frees everything
	ts.mustCall(202, "DELETE", "/api/v1/vms/v1", admin, nil, nil)
	if code := a.do("PUT", "/agent/v1/vms/default/v1/status", api.VMReport{Phase: model.PhaseRunning}, &vm); code != 200 || vm.Status.Phase != model.PhaseDeleting {
		t.Fatalf("a running report must not undo deleting: %d %+v", code, vm.Status)
	}
	if code := a.do("PUT", "/agent/v1/vms/default/v1/status", api.VMReport{Gone: true}, nil); code != 204 {
		t.Fatalf("gone: %d", code)
	}
	ts.mustCall(404, "GET", "/api/v1/vms/v1", admin, nil, nil)
	alloc, _ := ts.Repo().GetAllocation(ctx, "h1")
	if alloc.VMs["default/v1"] || !alloc.VMs["default/v2"] {
		t.Fatalf("allocation after delete %+v", alloc.VMs)
	}
	var pv api.ProjectView
	ts.mustCall(200, "GET", "/api/v1/projects/default", admin, nil, &pv)
	if pv.Usage.VMs != 2 {
		t.Fatalf("usage after delete %+v", pv.Usage)
	}
	var evs api.EventList
	ts.mustCall(200, "GET", "/api/v1/events", admin, nil, &evs)
	kinds := map[string]int{}
	for _, e := range evs.Items {
		kinds[e.Kind]++
	}
	if kinds["host.joined"] != 1 || kinds["vm.phase"] < 4 || kinds["vm.deleted"] != 1 {
		t.Fatalf("events %v", kinds)
	}
}

func TestHeartbeatRenewsExpiredLease(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	st := memstore.New(memstore.WithClock(clock))
	defer st.Close()
	ts := startServer(t, st)
	a := joinAgent(t, ts, "h1")
	a.beat()
	ctx := context.Background()
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	st.ExpireLeases()
	if _, err := st.Get(ctx, store.AliveKey("h1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("alive key survived its lease: %v", err)
	}
	// the HA controller would mark it down; the next heartbeat brings it back
	if _, err := ts.Repo().UpdateHost(ctx, "h1", func(h *model.Host) error { h.State = model.HostDown; return nil }); err != nil {
		t.Fatal(err)
	}
	a.beat()
	if _, err := st.Get(ctx, store.AliveKey("h1")); err != nil {
		t.Fatalf("no alive key after renewal: %v", err)
	}
	h, _ := ts.Repo().GetHost(ctx, "h1")
	if h.State != model.HostReady {
		t.Fatalf("host state %s after heartbeat", h.State)
	}
	evs, _, _ := ts.Repo().ListEvents(ctx, 0, "")
	if last := evs[len(evs)-1]; last.Kind != "host.up" {
		t.Fatalf("last event %+v, want host.up", last)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
