package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// try does one agent request with a fresh connection (so that the TLS
// handshake runs again) and returns the status, or the error of a
// connection the server refused.
func (a *testAgent) try(method, path string, body any) (int, error) {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://"+a.addr+path, rd)
	req.Close = true
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func hb(host string) api.Heartbeat {
	return api.Heartbeat{Host: host, Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB, Disk: 100 * model.GiB}, Driver: "sim"}
}

func newJoinToken(t *testing.T, ts *testServer, uses int) string {
	t.Helper()
	jt, err := ts.NewJoinToken(context.Background(), time.Hour, uses)
	if err != nil {
		t.Fatal(err)
	}
	return jt.Token
}

func TestJoinTokenUses(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	var one, two api.JoinTokenResponse
	ts.mustCall(201, "POST", "/api/v1/hosts/join-tokens", admin, api.JoinTokenRequest{}, &one)
	ts.mustCall(201, "POST", "/api/v1/hosts/join-tokens", admin, api.JoinTokenRequest{Uses: 2}, &two)
	if one.Uses != 1 || two.Uses != 2 {
		t.Fatalf("uses %d and %d, want 1 and 2", one.Uses, two.Uses)
	}
	for _, bad := range []int{-1, api.MaxJoinTokenUses + 1} {
		if code, e := ts.call("POST", "/api/v1/hosts/join-tokens", admin, api.JoinTokenRequest{Uses: bad}, nil); code != 400 || e.Field != "uses" {
			t.Fatalf("uses %d: %d %+v", bad, code, e)
		}
	}
	steps := []struct {
		token, host string
		want        int
	}{
		{one.Token, "h1", 200},
		{one.Token, "h2", 401}, // single use by default
		{two.Token, "h2", 200},
		{two.Token, "h3", 200},
		{two.Token, "h4", 401},
	}
	for _, st := range steps {
		if _, code := joinWith(t, ts, st.token, st.host); code != st.want {
			t.Fatalf("join %s: %d, want %d", st.host, code, st.want)
		}
	}
}

// Two (here eight) joins at once with one single-use token give exactly
// one host.
func TestConcurrentJoinsWithOneToken(t *testing.T) {
	ts := startServer(t, nil)
	tok := newJoinToken(t, ts, 1)
	codes := make([]int, 8)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, codes[i] = joinWith(t, ts, tok, fmt.Sprintf("c%d", i))
		}()
	}
	wg.Wait()
	ok := 0
	for _, c := range codes {
		switch c {
		case 200:
			ok++
		case 401:
		default:
			t.Fatalf("a join answered %d", c)
		}
	}
	ps, err := ts.Repo().LoadPKI(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ok != 1 || len(ps.Bindings) != 1 {
		t.Fatalf("%d joins succeeded (%v), %d hosts bound", ok, codes, len(ps.Bindings))
	}
}

// A join token cannot take an existing host's name: the thief gets 409
// and the host keeps working.
func TestJoinRefusesTakenName(t *testing.T) {
	ts := startServer(t, nil)
	a := joinAgent(t, ts, "h1")
	a.beat()
	tok := newJoinToken(t, ts, 1)
	if _, code := joinWith(t, ts, tok, "h1"); code != 409 {
		t.Fatalf("join as a taken name: %d", code)
	}
	a.beat()
	// the refused join did not consume the token
	if _, code := joinWith(t, ts, tok, "h2"); code != 200 {
		t.Fatalf("the token after a refused join: %d", code)
	}
}

// refused says whether the server refused the request: at the TLS
// handshake, or with 403.
func refused(code int, err error) bool {
	return (err != nil && !errors.Is(err, io.EOF)) || code == 403
}

// A removed host's certificate is revoked: its heartbeat is refused (by
// this server and by another one on the same store) and never brings
// the host back, and once the revocation is known the handshake fails.
func TestRemovedHostIsRevoked(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	ts := startServer(t, st)
	other := startServer(t, st)
	a := joinAgent(t, ts, "h1")
	a.beat() // leaves a kept-alive connection, past its handshake
	ts.mustCall(204, "DELETE", "/api/v1/hosts/h1", ts.AdminToken(), nil, nil)
	// on that connection the per-request check answers
	if code := a.do("PUT", "/agent/v1/heartbeat", hb("h1"), nil); code != 403 {
		t.Fatalf("a removed host's heartbeat on an open connection: %d", code)
	}
	viaOther := *a
	viaOther.addr = other.AgentAddr()
	for _, ag := range []*testAgent{a, &viaOther} {
		for range 3 {
			if code, err := ag.try("PUT", "/agent/v1/heartbeat", hb("h1")); !refused(code, err) {
				t.Fatalf("a removed host's heartbeat: %d %v", code, err)
			}
			if code, err := ag.try("GET", "/agent/v1/assignments", nil); !refused(code, err) {
				t.Fatalf("a removed host's assignments: %d %v", code, err)
			}
		}
	}
	if _, err := st.Get(context.Background(), store.HostKey("h1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a removed host's heartbeat brought it back: %v", err)
	}
	// the TLS layer refuses the revoked serial once the cache has it
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := a.try("GET", "/agent/v1/power", nil)
		if err != nil && strings.Contains(err.Error(), "tls") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handshake still accepts a revoked certificate: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// a new join with a fresh token makes the name live again, with a
	// new certificate only
	b, code := joinWith(t, ts, newJoinToken(t, ts, 1), "h1")
	if code != 200 {
		t.Fatalf("join after removal: %d", code)
	}
	b.beat()
	if code, err := a.try("PUT", "/agent/v1/heartbeat", hb("h1")); !refused(code, err) {
		t.Fatalf("the old certificate after a new join: %d %v", code, err)
	}
}

// vpool host rekey revokes the host's certificate and answers a token
// that joins that name alone, once; the host keeps its record.
func TestRekeyHost(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	a := joinAgent(t, ts, "h1")
	a.beat()
	ts.mustCall(200, "PATCH", "/api/v1/hosts/h1", admin, api.HostPatchRequest{Labels: map[string]string{"rack": "r7"}}, nil)
	member := ts.tokenFor("default", model.RoleMember)
	ts.mustCall(403, "POST", "/api/v1/hosts/h1/rekey", member, nil, nil)
	ts.mustCall(404, "POST", "/api/v1/hosts/nope/rekey", admin, nil, nil)
	var rk api.JoinTokenResponse
	ts.mustCall(201, "POST", "/api/v1/hosts/h1/rekey", admin, api.HostRekeyRequest{TTL: "10m"}, &rk)
	if rk.Host != "h1" || rk.Uses != 1 {
		t.Fatalf("rekey answer %+v", rk)
	}
	if code, err := a.try("PUT", "/agent/v1/heartbeat", hb("h1")); !refused(code, err) {
		t.Fatalf("heartbeat with the re-keyed certificate: %d %v", code, err)
	}
	if _, code := joinWith(t, ts, rk.Token, "h2"); code != 403 {
		t.Fatalf("re-key token for another name: %d", code)
	}
	b, code := joinWith(t, ts, rk.Token, "h1")
	if code != 200 {
		t.Fatalf("join with the re-key token: %d", code)
	}
	b.beat()
	if _, code := joinWith(t, ts, rk.Token, "h1"); code != 401 {
		t.Fatalf("re-key token used twice: %d", code)
	}
	var h model.Host
	ts.mustCall(200, "GET", "/api/v1/hosts/h1", admin, nil, &h)
	if h.Labels["rack"] != "r7" || h.State != model.HostReady {
		t.Fatalf("host after re-key %+v", h)
	}
}

// A host gets the secrets of the VMs assigned to it only, and reports
// for those only.
func TestHostSecretsStayWithTheirHost(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "beta"}, nil)
	a, b := joinAgent(t, ts, "ha"), joinAgent(t, ts, "hb")
	a.beat()
	b.beat()
	req := vmReq("secret-vm")
	req.Spec.CloudInit = &model.CloudInit{UserData: "#cloud-config\npassword: s3cr3t-of-beta\n"}
	ts.mustCall(201, "POST", "/api/v1/vms?project=beta", admin, req, nil)
	if _, err := ts.Repo().UpdateVM(ctx, "beta", "secret-vm", func(v *model.VM) error {
		v.Status.Host, v.Status.Phase = "ha", model.PhaseCreating
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	raw := func(ag *testAgent, path string) string {
		resp, err := ag.client.Get("https://" + ag.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if !strings.Contains(raw(a, "/agent/v1/assignments"), "s3cr3t-of-beta") {
		t.Fatal("the VM's own host did not get its user data")
	}
	for _, path := range []string{"/agent/v1/assignments", "/agent/v1/migrations", "/agent/v1/consoles?wait=0s"} {
		if body := raw(b, path); strings.Contains(body, "s3cr3t") {
			t.Fatalf("host hb read another host's VM secret at %s: %s", path, body)
		}
	}
	if code := b.do("PUT", "/agent/v1/vms/beta/secret-vm/status", api.VMReport{Phase: model.PhaseFailed, Error: "pwned"}, nil); code != 409 {
		t.Fatalf("hb reported for ha's VM: %d", code)
	}
	b.beat(api.VMReport{Project: "beta", Name: "secret-vm", Usage: model.VMUsage{CPUPercent: 99}})
	vm, err := ts.Repo().GetVM(ctx, "beta", "secret-vm")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Status.Phase != model.PhaseCreating || vm.Status.LastError != "" || vm.Status.Usage.CPUPercent != 0 {
		t.Fatalf("another host changed the VM's status: %+v", vm.Status)
	}
}

// A host certificate cannot serve as the server: not under the name the
// clients dial (a host named "localhost" gets localhost.host.vpool.invalid),
// and not under its own name to a client that checks the server role.
func TestHostCertCannotServeAsServer(t *testing.T) {
	ts := startServer(t, nil)
	ag, code := joinWith(t, ts, newJoinToken(t, ts, 1), "localhost")
	if code != 200 {
		t.Fatalf("join: %d", code)
	}
	// served with the CA in its chain, as the real server does
	served := ag.cert
	served.Certificate = append(served.Certificate, ts.ca.Cert.Raw)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{served}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ts.CAPEM())
	tests := []struct {
		name string
		cfg  *tls.Config
		want error
	}{
		{"a client of the cluster CA dialing localhost (the CLI's check)", &tls.Config{RootCAs: pool, ServerName: "localhost"}, nil},
		{"an agent checking the role, under the host's own name", &tls.Config{RootCAs: pool, ServerName: pki.HostDNSName("localhost"),
			VerifyConnection: pki.VerifyServerConnection}, pki.ErrRole},
		{"a pinned first contact", &tls.Config{InsecureSkipVerify: true, VerifyPeerCertificate: pki.VerifyPinned(ts.CAHash())}, pki.ErrRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", "127.0.0.1:"+port, tt.cfg)
			if err == nil {
				c.Close()
				t.Fatal("the host certificate passed for the server")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("refused for another reason: %v", err)
			}
		})
	}
	// the CLI's client, given the cluster CA, refuses it too
	cli, err := client.New("https://localhost:"+port, "t", client.WithCACert(ts.CAPEM()))
	if err != nil {
		t.Fatal(err)
	}
	var ve *tls.CertificateVerificationError
	if _, err := cli.ClusterInfo(context.Background()); !errors.As(err, &ve) {
		t.Fatalf("the CLI's client and a host certificate: %v", err)
	}
	// the real server passes the same checks
	c, err := tls.Dial("tcp", ts.AgentAddr(), &tls.Config{RootCAs: pool, ServerName: "localhost", VerifyConnection: pki.VerifyServerConnection})
	if err != nil {
		t.Fatalf("the server failed the role check: %v", err)
	}
	c.Close()
}

// A host's migration certificate — the key its QEMUs hold for migration
// TLS — verifies as the host's for migration peers, but speaks for the
// host nowhere on the agent listener (refused at the handshake): a QEMU
// escape that takes it reads none of the host's VMs' secrets (VP-11).
func TestMigrationCertIsNoHostIdentity(t *testing.T) {
	ts := startServer(t, nil)
	ha := joinAgent(t, ts, "ha")
	ha.beat()
	req := vmReq("secret-vm")
	req.Spec.CloudInit = &model.CloudInit{UserData: "#cloud-config\npassword: s3cr3t-of-ha\n"}
	ts.mustCall(201, "POST", "/api/v1/vms", ts.AdminToken(), req, nil)
	if _, err := ts.Repo().UpdateVM(context.Background(), api.DefaultProject, "secret-vm", func(v *model.VM) error {
		v.Status.Host = "ha"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR("ha")
	if err != nil {
		t.Fatal(err)
	}
	var res api.MigrationCertResponse
	if code := ha.do("POST", "/agent/v1/migration-cert", api.MigrationCertRequest{CSRPEM: string(csrPEM)}, &res); code != 200 {
		t.Fatalf("migration-cert: %d", code)
	}
	cert, err := tls.X509KeyPair([]byte(res.CertPEM), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ts.ca.Pool(), DNSName: pki.HostDNSName("ha"),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil || leaf.Subject.CommonName != "ha" {
		t.Fatalf("the migration certificate does not serve ha's migrations: CN %q, %v", leaf.Subject.CommonName, err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(res.CAPEM))
	stolen := &testAgent{t: t, addr: ts.AgentAddr(), host: "ha", cert: cert, client: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "127.0.0.1"}}}}
	for _, c := range []struct{ method, path string }{
		{"GET", "/agent/v1/assignments"}, {"GET", "/agent/v1/migrations"}, {"GET", "/agent/v1/backups?wait=0s"},
		{"POST", "/agent/v1/migration-cert"}, {"PUT", "/agent/v1/heartbeat"},
	} {
		var body any
		switch c.path {
		case "/agent/v1/migration-cert":
			body = api.MigrationCertRequest{CSRPEM: string(csrPEM)}
		case "/agent/v1/heartbeat":
			body = hb("ha")
		}
		if code, err := stolen.try(c.method, c.path, body); !refused(code, err) {
			t.Errorf("%s %s with the migration certificate: %d %v, want refused (handshake or 403)", c.method, c.path, code, err)
		}
	}
}
