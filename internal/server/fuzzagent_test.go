package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/imagepool"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store/memstore"
)

// FuzzAgentHTTP drives the agent protocol in process as a hostile host
// would: every route, as no one, as the host the fixture's VMs run on
// (h1) and as another joined host (h3), with one path parameter, a query
// and a body from the fuzzer. Properties: no panic; never a 5xx (but the
// image file route, whose fixture image lives in another server's pool);
// every error an api.Error of a documented 4xx with a bounded message.
// Joined hosts are treated as hostile: a certificate gets a host no
// further than its own objects (TestEveryAgentRouteEveryRole), and no
// body it sends may take the server down.

// agentFuzzUnavailable may answer 503 by design.
var agentFuzzUnavailable = map[string]bool{"GET /agent/v1/images/{name}/files/{sha256}": true}

// agentFuzzDefaults fill path parameters the input does not set.
var agentFuzzDefaults = map[string]string{"project": "alpha", "name": "vm1", "vm": "vm1", "id": "m1", "sha256": strings.Repeat("0", 64)}

// agentFuzzWho are the callers: no certificate, the fixture's host, a stranger.
var agentFuzzWho = []string{"", "h1", "h3"}

type agentFuzzServer struct {
	mu    sync.Mutex
	s     *Server
	mux   http.Handler
	certs map[string]*x509.Certificate
	close func()
	calls int
}

func FuzzAgentHTTP(f *testing.F) {
	for k, w := range agentWalks {
		for who := range agentFuzzWho {
			f.Add(k, uint8(who), "", "", []byte(w.body))
		}
		for _, b := range []string{"", "null", "{}", "[]", `{"phase":"running","error":"` + strings.Repeat("x", 70000) + `"}`} {
			f.Add(k, uint8(1), "", "", []byte(b))
		}
		f.Add(k, uint8(1), "../../etc/shadow", "after=-1&etag=%00", []byte(w.body))
		f.Add(k, uint8(2), "vm2", "after=9223372036854775807", []byte(w.body))
	}
	for _, n := range hostileNumbers {
		for _, b := range []string{
			`{"host":"h1","capacity":{"cpus":%s,"memory":%s,"disk":%s},"driver":"sim"}`,
			`{"host":"h1","capacity":{"cpus":16,"memory":68719476736},"usage":{"cpuPercent":%s,"memoryUsed":%s},"driver":"sim"}`,
		} {
			f.Add("PUT /agent/v1/heartbeat", uint8(1), "", "", []byte(strings.ReplaceAll(b, "%s", n)))
		}
		f.Add("PUT /agent/v1/vms/{project}/{name}/status", uint8(1), "", "", []byte(`{"phase":"running","usage":{"cpuPercent":`+n+`}}`))
		f.Add("PUT /agent/v1/migrations/{id}/report", uint8(1), "", "", []byte(`{"progress":{"bytesSent":`+n+`,"bytesTotal":`+n+`}}`))
		f.Add("PUT /agent/v1/backups/{project}/{name}", uint8(1), "", "", []byte(`{"phase":"running","progress":{"done":`+n+`,"total":`+n+`}}`))
	}
	var fs agentFuzzServer
	f.Cleanup(func() {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		if fs.close != nil {
			fs.close()
		}
	})
	f.Fuzz(func(t *testing.T, route string, who uint8, param, query string, body []byte) {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		if fs.s == nil || fs.calls%fuzzReset == 0 {
			if fs.close != nil {
				fs.close()
			}
			fs.s, fs.mux, fs.certs, fs.close = newAgentFuzzServer(t)
		}
		fs.calls++
		e := pickAgentRoute(fs.s.agentEndpoints(), route)
		host := agentFuzzWho[int(who)%len(agentFuzzWho)]
		req := agentFuzzRequest(e, param, query, body)
		if req == nil {
			return
		}
		if host != "" {
			req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{fs.certs[host]}}}
		}
		rec := httptest.NewRecorder()
		fs.mux.ServeHTTP(rec, req)
		out, _ := io.ReadAll(rec.Result().Body)
		checkAgentFuzzAnswer(t, e, host, rec.Code, out)
	})
}

// newAgentFuzzServer is a fixture server whose hosts h1 and h3 joined
// (real join tokens, CSRs and certificates, in process).
func newAgentFuzzServer(t *testing.T) (*Server, http.Handler, map[string]*x509.Certificate, func()) {
	st := memstore.New()
	pool, err := imagepool.New(imagepool.Config{Dir: t.TempDir(), MaxSize: model.MiB})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Store: st, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", Placer: walkPlanner{},
		Images: pool, Clock: func() time.Time { return time.Unix(1.7e9, 0).UTC() }})
	if err != nil {
		t.Fatal(err)
	}
	closeAll := func() { s.ln.Close(); s.agentLn.Close(); st.Close() }
	mux, err := s.agentRoutes()
	if err != nil {
		closeAll()
		t.Fatal(err)
	}
	certs := map[string]*x509.Certificate{}
	for _, h := range []string{"h1", "h3"} {
		certs[h] = joinInProcess(t, s, mux, h)
	}
	seedFixture(t, s)
	// The fixture's own check: its hosts get past authentication (a fuzzer
	// bouncing off 401/403 would test nothing).
	req := httptest.NewRequest("PUT", "/agent/v1/heartbeat", strings.NewReader(agentWalks["PUT /agent/v1/heartbeat"].body))
	req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{certs["h1"]}}}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != 200 {
		closeAll()
		t.Fatalf("fixture: h1's heartbeat answered %d %s", rec.Code, cut(rec.Body.Bytes()))
	}
	return s, mux, certs, closeAll
}

// joinInProcess joins host through the join route and returns its certificate.
func joinInProcess(t *testing.T, s *Server, mux http.Handler, host string) *x509.Certificate {
	t.Helper()
	jt, err := s.NewJoinToken(t.Context(), time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, csrPEM, err := pki.NewKeyAndCSR(host)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(api.JoinRequest{Host: host, CSRPEM: string(csrPEM)})
	req := httptest.NewRequest("POST", "/agent/v1/join", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+jt.Token)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	var jr api.JoinResponse
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &jr) != nil {
		t.Fatalf("join %s: %d %s", host, rec.Code, cut(rec.Body.Bytes()))
	}
	blk, _ := pem.Decode([]byte(jr.CertPEM))
	if blk == nil {
		t.Fatalf("join %s: no certificate in the answer", host)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func pickAgentRoute(es []agentEndpoint, name string) agentEndpoint {
	sort.Slice(es, func(i, j int) bool { return es[i].method+es[i].path < es[j].method+es[j].path })
	for _, e := range es {
		if e.method+" "+e.path == name {
			return e
		}
	}
	var h uint32 = 2166136261
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return es[int(h%uint32(len(es)))]
}

// agentFuzzRequest fills the path (param replaces the first parameter)
// and never lets a long poll wait.
func agentFuzzRequest(e agentEndpoint, param, query string, body []byte) *http.Request {
	return buildFuzzRequest(e.method, "https://vpool.test", e.path, agentFuzzDefaults, param, query, body, func(q url.Values) { q.Set("wait", "0s") })
}

func checkAgentFuzzAnswer(t *testing.T, e agentEndpoint, host string, code int, body []byte) {
	t.Helper()
	key := e.method + " " + e.path
	who := host
	if who == "" {
		who = "no certificate"
	}
	switch {
	case code == 503 && agentFuzzUnavailable[key]:
	case code >= 500:
		t.Fatalf("%s as %s: %d %s", key, who, code, cut(body))
	case code >= 300:
		checkFuzzError(t, key, who, code, body)
	case code != e.status && !(code == 204 && e.status == 200):
		t.Fatalf("%s as %s: %d, but the route documents %d", key, who, code, e.status)
	}
}
