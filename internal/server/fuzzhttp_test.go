package server

import (
	"bytes"
	"encoding/json"
	"hash/fnv"
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
	"github.com/vpool/vpool/internal/store/memstore"
)

// FuzzHTTP drives the whole user API in process: a request goes in
// (route, caller, one path parameter, query, body), a response comes out.
// Properties: no panic and no fatal error (the process lives); the
// status is one the route documents — its success status, or a 4xx with
// an api.Error body whose message is bounded, never a 5xx; whatever a
// create accepted is a valid spec; no tenant is shown host-internal
// detail. The seeds (run by every go test) hold the review's hostile
// values: extreme integers, 1e308, NaN spelled out, commas, quotes, NUL
// bytes, traversal, huge strings and null bodies.

// fuzzRoutes are the user API's routes, sorted, without the two whose
// answer waits on an agent (the console; TestEveryRouteEveryRole covers
// them).
func fuzzRoutes(s *Server) []endpoint {
	var out []endpoint
	for _, e := range s.endpoints() {
		if !strings.Contains(e.path, "/console") {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].method+out[i].path < out[j].method+out[j].path })
	return out
}

// fuzzServer is one fixture server per fuzzing process, replaced every
// fuzzReset calls so that the state the fuzzer builds up stays small.
type fuzzServer struct {
	mu    sync.Mutex
	s     *Server
	close func()
	calls int
	// sent holds the secret markers the requests to s carried: a tenant
	// may be shown its own earlier input (a VM's cloud-init user data
	// "/etc/shadow" comes back in the list), which is no leak
	sent map[string]bool
}

func (fs *fuzzServer) stop() {
	if fs.close != nil {
		fs.close()
		fs.s, fs.close, fs.sent = nil, nil, nil
	}
}

const fuzzReset = 2000

// alternatives are 2xx statuses a route answers besides its documented
// one: a dry run (200) and a delete that needs no agent (204).
var alternatives = map[string]int{
	"POST /api/v1/vms": 200, "POST /api/v1/vms:batch": 200, "POST /api/v1/migrations": 200,
	"DELETE /api/v1/vms/{name}": 204, "DELETE /api/v1/vms/{name}/snapshots/{snapshot}": 204,
}

// unavailable lists the routes that may answer 501 "unavailable" by
// design: a server without qemu-img cannot convert a downloaded image.
// Any other 5xx is a bug.
var unavailable = map[string]bool{"POST /api/v1/images": true}

// fuzzDefaults fill path parameters the input does not set.
var fuzzDefaults = map[string]string{"name": "vm1", "snapshot": "s1", "disk": "data", "id": "m1", "nic": "nic0", "ip": "10.10.0.100"}

func FuzzHTTP(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.route, s.role, s.param, s.query, []byte(s.body))
	}
	var fs fuzzServer
	f.Cleanup(func() { fs.mu.Lock(); fs.stop(); fs.mu.Unlock() })
	f.Fuzz(func(t *testing.T, route string, roleIdx uint8, param, query string, body []byte) {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		if fs.s == nil || fs.calls%fuzzReset == 0 {
			fs.stop()
			fs.s, fs.close = newFuzzServer(t)
			fs.sent = map[string]bool{}
		}
		fs.calls++
		s := fs.s
		routes := fuzzRoutes(s)
		e := pickRoute(routes, route)
		r := userRoles[int(roleIdx)%len(userRoles)]
		req := fuzzRequest(e, param, query, body)
		if req == nil {
			return // not a request a client can send
		}
		if sec := r.secret(s); sec != "" {
			req.Header.Set("Authorization", "Bearer "+sec)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		out, _ := io.ReadAll(rec.Result().Body)
		key := e.method + " " + e.path
		sent := string(body) + param + query
		for _, m := range secretMarkers {
			if strings.Contains(sent, m) {
				fs.sent[m] = true
			}
		}
		checkFuzzAnswer(t, key, e.status, r, rec.Code, out, sent, fs.sent)
	})
}

// newFuzzServer is a fixture server that outlives the iteration that
// made it (the caller closes it), whose state a fuzzing process cannot
// grow without bound: projects alpha and beta have quotas.
func newFuzzServer(t *testing.T) (*Server, func()) {
	st := memstore.New()
	pool, err := imagepool.New(imagepool.Config{Dir: t.TempDir(), MaxSize: model.MiB})
	if err != nil {
		t.Fatal(err)
	}
	// no converter: URL imports answer 501 and never reach the network
	s, err := New(Config{Store: st, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", Placer: walkPlanner{},
		Images: pool, Clock: func() time.Time { return time.Unix(1.7e9, 0).UTC() },
		// the clock stands still, so a rate limit would never refill:
		// TestTenantIsRateLimited covers it
		APIRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	closeAll := func() { s.ln.Close(); s.agentLn.Close(); st.Close() }
	seedFixture(t, s)
	for _, p := range []string{"alpha", "beta"} {
		if _, err := s.repo.UpdateProject(t.Context(), p, func(pr *model.Project) error {
			pr.Quota = model.Quota{VMs: 64}
			return nil
		}); err != nil {
			closeAll()
			t.Fatal(err)
		}
	}
	return s, closeAll
}

func pickRoute(routes []endpoint, name string) endpoint {
	for _, e := range routes {
		if e.method+" "+e.path == name {
			return e
		}
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return routes[int(h.Sum32()%uint32(len(routes)))]
}

// fuzzRequest builds the request: param fills the route's first path
// parameter (escaped), the fixture's names the others; query is parsed
// as a client would send it, without follow (a stream never ends).
func fuzzRequest(e endpoint, param, query string, body []byte) *http.Request {
	return buildFuzzRequest(e.method, "http://vpool.test", e.path, fuzzDefaults, param, query, body, func(q url.Values) { q.Del("follow") })
}

// buildFuzzRequest fills path's parameters (param the first, defaults the
// others, each escaped), parses query as a client would send it (an
// unparsable one is dropped), lets fix adjust it, and makes the request
// (nil when the method cannot make one, or when param is a dot segment:
// ServeMux answers those with a redirect to the cleaned path before any
// handler runs).
func buildFuzzRequest(method, base, path string, defaults map[string]string, param, query string, body []byte, fix func(url.Values)) *http.Request {
	if param == "." || param == ".." {
		return nil
	}
	first := true
	for {
		i := strings.Index(path, "{")
		if i < 0 {
			break
		}
		j := strings.Index(path[i:], "}") + i
		v := defaults[path[i+1:j]]
		if first && param != "" {
			v = param
		}
		first = false
		path = path[:i] + url.PathEscape(v) + path[j+1:]
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		q = url.Values{}
	}
	fix(q)
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		return nil
	}
	req.URL.RawQuery = q.Encode()
	return req
}

// checkFuzzError checks an error answer to a fuzzed request: an
// api.Error with a code and a message, not echoing the input at length,
// with a documented status.
func checkFuzzError(t *testing.T, key, who string, code int, body []byte) {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Code == "" || e.Message == "" {
		t.Fatalf("%s as %s: %d with body %s, want an api.Error", key, who, code, cut(body))
	}
	if len(e.Message) > 4096 || len(e.Field) > 512 {
		t.Fatalf("%s as %s: an error of %d bytes (field %d): it echoes the input", key, who, len(e.Message), len(e.Field))
	}
	switch code {
	case 400, 401, 403, 404, 409, 413:
	default:
		t.Fatalf("%s as %s: undocumented status %d %s", key, who, code, cut(body))
	}
}

// sent is the request's text: a marker the caller sent itself may come
// back in the answer (an error quoting the value), and so may one an
// earlier request to the same server sent (sentBefore: stored in a VM
// the tenant lists). The planted fragments never come from a request:
// they fail unless this request sent them.
func checkFuzzAnswer(t *testing.T, key string, documented int, r role, code int, body []byte, sent string, sentBefore map[string]bool) {
	t.Helper()
	switch {
	case code == 501 && unavailable[key] && isUnavailable(body):
	case code >= 500:
		t.Fatalf("%s as %s: %d %s", key, r, code, cut(body))
	case code >= 300:
		checkFuzzError(t, key, string(r), code, body)
	case code != documented && code != alternatives[key]:
		t.Fatalf("%s as %s: %d, but the route documents %d", key, r, code, documented)
	}
	if r.tenant() {
		for _, m := range secretMarkers {
			if strings.Contains(string(body), m) && !strings.Contains(sent, m) && !sentBefore[m] {
				t.Fatalf("%s as %s: the answer shows %q", key, r, m)
			}
		}
		for _, m := range plantedFragments {
			if strings.Contains(string(body), m) && !strings.Contains(sent, m) {
				t.Fatalf("%s as %s: the answer shows the planted %q", key, r, m)
			}
		}
	}
	if code == 201 && (key == "POST /api/v1/vms" || key == "POST /api/v1/vms:batch") {
		checkCreated(t, key, body)
	}
}

// isUnavailable reports whether body is an api.Error of code unavailable.
func isUnavailable(body []byte) bool {
	var e api.Error
	return json.Unmarshal(body, &e) == nil && e.Code == api.CodeUnavailable
}

// checkCreated: every VM a create accepted holds a valid spec.
func checkCreated(t *testing.T, key string, body []byte) {
	t.Helper()
	var vms []model.VM
	if key == "POST /api/v1/vms" {
		var vm model.VM
		if err := json.Unmarshal(body, &vm); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		vms = append(vms, vm)
	} else {
		var res api.VMBatchResponse
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		vms = res.VMs
	}
	for _, vm := range vms {
		if err := vm.Spec.Validate(); err != nil {
			t.Fatalf("%s accepted VM %s whose spec fails validation: %v", key, vm.Name, err)
		}
		if err := checkSSHKeys(&vm.Spec, ""); err != nil {
			t.Fatalf("%s accepted VM %s with a bad key: %v", key, vm.Name, err)
		}
	}
}
