package server

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/web"
)

// endpoint is one user API route: its handler and, for the OpenAPI
// document, the types it reads and writes.
type endpoint struct {
	method, path string
	handle       func(w http.ResponseWriter, r *http.Request, p *principal) error
	public       bool     // no authentication
	req          any      // request body type, nil for none
	resp         any      // success body type, nil for none
	status       int      // success status
	query        []string // query parameters it reads
}

// endpoints is the user API. routes() checks that it matches api.Routes
// exactly, and a test checks both against the OpenAPI document.
func (s *Server) endpoints() []endpoint {
	scoped := []string{"project"}
	return slices.Concat(s.balanceEndpoints(), s.balancerEndpoints(), s.memberEndpoints(), s.migrationEndpoints(), s.vmOpEndpoints(), s.imageEndpoints(), s.networkEndpoints(), s.auditEndpoints(), s.usageEndpoints(), s.complianceEndpoints(), s.historyEndpoints(), s.backupEndpoints(), []endpoint{
		{method: "GET", path: "/api/v1/openapi.json", handle: s.openAPI, public: true, resp: map[string]any{}, status: 200},
		{method: "GET", path: "/api/v1/cluster", handle: s.clusterInfo, resp: api.ClusterInfo{}, status: 200},
		{method: "GET", path: "/api/v1/cluster/policy", handle: s.getPolicy, resp: model.Policy{}, status: 200},
		{method: "PUT", path: "/api/v1/cluster/policy", handle: s.putPolicy, req: model.Policy{}, resp: model.Policy{}, status: 200},
		{method: "GET", path: "/api/v1/ha", handle: s.haStatus, resp: api.HAStatus{}, status: 200},

		{method: "GET", path: "/api/v1/projects", handle: s.listProjects, resp: api.ProjectList{}, status: 200},
		{method: "POST", path: "/api/v1/projects", handle: s.createProject, req: api.ProjectCreateRequest{}, resp: api.ProjectView{}, status: 201},
		{method: "GET", path: "/api/v1/projects/{name}", handle: s.getProject, resp: api.ProjectView{}, status: 200},
		{method: "PATCH", path: "/api/v1/projects/{name}", handle: s.patchProject, req: api.ProjectPatchRequest{}, resp: api.ProjectView{}, status: 200},
		{method: "DELETE", path: "/api/v1/projects/{name}", handle: s.deleteProject, status: 204},

		{method: "GET", path: "/api/v1/vms", handle: s.listVMs, resp: api.VMList{}, status: 200, query: []string{"project", "all-projects", "limit", "continue", "consistent", "min-revision"}},
		{method: "POST", path: "/api/v1/vms", handle: s.createVM, req: api.VMCreateRequest{}, resp: model.VM{}, status: 201, query: scoped},
		{method: "POST", path: "/api/v1/vms:batch", handle: s.batchVMs, req: api.VMBatchRequest{}, resp: api.VMBatchResponse{}, status: 201, query: scoped},
		{method: "GET", path: "/api/v1/vms/{name}", handle: s.getVM, resp: model.VM{}, status: 200, query: []string{"project", "min-revision"}},
		{method: "PATCH", path: "/api/v1/vms/{name}", handle: s.patchVM, req: api.VMPatchRequest{}, resp: model.VM{}, status: 200, query: scoped},
		{method: "DELETE", path: "/api/v1/vms/{name}", handle: s.deleteVM, resp: model.VM{}, status: 202, query: scoped},
		{method: "POST", path: "/api/v1/vms/{name}/start", handle: s.powerVM("start"), resp: model.VM{}, status: 202, query: scoped},
		{method: "POST", path: "/api/v1/vms/{name}/stop", handle: s.stopVM, req: api.VMStopRequest{}, resp: model.VM{}, status: 202, query: scoped},
		{method: "POST", path: "/api/v1/vms/{name}/restart", handle: s.powerVM("restart"), resp: model.VM{}, status: 202, query: scoped},

		{method: "GET", path: "/api/v1/hosts", handle: s.listHosts, resp: api.HostList{}, status: 200, query: []string{"limit", "continue", "consistent", "min-revision"}},
		{method: "GET", path: "/api/v1/hosts/{name}", handle: s.getHost, resp: model.Host{}, status: 200},
		{method: "PATCH", path: "/api/v1/hosts/{name}", handle: s.patchHost, req: api.HostPatchRequest{}, resp: model.Host{}, status: 200},
		{method: "DELETE", path: "/api/v1/hosts/{name}", handle: s.deleteHost, status: 204},
		{method: "POST", path: "/api/v1/hosts/join-tokens", handle: s.createJoinToken, req: api.JoinTokenRequest{}, resp: api.JoinTokenResponse{}, status: 201},
		{method: "POST", path: "/api/v1/hosts/{name}/rekey", handle: s.rekeyHost, req: api.HostRekeyRequest{}, resp: api.JoinTokenResponse{}, status: 201},

		{method: "GET", path: "/api/v1/tokens", handle: s.listTokens, resp: api.TokenList{}, status: 200},
		{method: "POST", path: "/api/v1/tokens", handle: s.createToken, req: api.TokenCreateRequest{}, resp: api.TokenCreateResponse{}, status: 201},
		{method: "DELETE", path: "/api/v1/tokens/{id}", handle: s.deleteToken, status: 204},

		{method: "GET", path: "/api/v1/events", handle: s.events, resp: api.EventList{}, status: 200, query: []string{"project", "all-projects", "since", "limit", "follow"}},
	})
}

// routes builds the user API handler and checks that the endpoints are
// exactly api.Routes.
func (s *Server) routes() (http.Handler, error) {
	mux := http.NewServeMux()
	want := map[string]bool{}
	for _, r := range api.Routes {
		want[r.Method+" "+r.Path] = true
	}
	for _, e := range s.endpoints() {
		key := e.method + " " + e.path
		if !want[key] {
			return nil, fmt.Errorf("server: endpoint %s is not in api.Routes", key)
		}
		delete(want, key)
		mux.Handle(key, s.wrap(key, e))
	}
	for k := range want {
		return nil, fmt.Errorf("server: api.Routes has %s but no handler serves it", k)
	}
	mux.Handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	mux.Handle("GET /metrics", s.metricsHandler())
	// The dashboard: static files from the binary, calling this same API.
	mux.Handle(web.Prefix, web.Handler())
	mux.Handle("GET /{$}", web.Handler())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" || !cleanAPIPath(r.URL.Path) {
			he := errf(http.StatusNotFound, api.CodeNotFound, "", "no such endpoint: %s %s (see /api/v1/openapi.json)", r.Method, r.URL.Path)
			writeJSON(w, he.status, he.body)
			s.metrics.APILatency.WithLabelValues("unmatched", "404").Observe(0)
			return
		}
		mux.ServeHTTP(w, r)
	}), nil
}

// cleanAPIPath reports whether an /api/ path is in canonical form. The
// mux would answer "/api/v1/projects/." with a redirect to a route the
// client did not ask for; the API answers 404 instead.
func cleanAPIPath(p string) bool {
	if !strings.HasPrefix(p, "/api/") {
		return true
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// metricsHandler serves /metrics to cluster admins and metrics tokens
// (model.RoleMetrics): the gauges count every host and VM of the cluster.
func (s *Server) metricsHandler() http.Handler {
	h := s.metrics.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, he := s.authenticate(r)
		if he == nil && !p.clusterAdmin() && p.tok.Role != model.RoleMetrics {
			he = forbidden("/metrics needs an admin or a metrics token (vpool token create --role metrics)")
		}
		if he != nil {
			if he.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="vpool"`)
			}
			writeJSON(w, he.status, he.body)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// statusWriter remembers the status written; it passes Flush through
// for streams.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrap authenticates, runs the handler, writes its error as api.Error,
// observes latency and logs the request at debug level.
func (s *Server) wrap(route string, e endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		at := s.now()
		sw := &statusWriter{ResponseWriter: w}
		var err error
		var p *principal
		var note *auditNote
		if auditable(route) {
			r, note = s.withAuditIntent(r, route, e, &p, at)
		}
		if !e.public {
			var he *httpError
			if blocked, wait := s.userLimits.authBlocked(r, at); blocked && !s.knownBearer(r) {
				err = rateLimited(sw, wait, "%s failed to authenticate too often", clientAddr(r))
			} else if p, he = s.authenticate(r); he != nil {
				if he.status == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", `Bearer realm="vpool"`)
					s.userLimits.authFailed(r, at)
				}
				err = he
			} else if p.tok.Role == model.RoleMetrics {
				err = forbidden("a metrics token reads /metrics only")
			} else if ok, wait := s.userLimits.allow(p, at); !ok {
				err = s.userLimits.overLimit(sw, p, wait)
			}
		}
		if err == nil {
			if he := checkPathParams(route, r); he != nil {
				err = he
			}
		}
		if err == nil && p != nil && len(p.tok.Scopes) > 0 {
			err = s.checkScopes(sw, r, route, p)
		}
		if errors.Is(err, errAnswered) {
			err = nil
		} else if err == nil {
			err = e.handle(sw, r, p)
		}
		var failed *httpError
		if err != nil {
			he := toHTTP(err)
			if he.status >= 500 && he.body.Code == api.CodeInternal {
				s.log.Error("request failed", "route", route, "err", err)
				if p == nil || !p.clusterAdmin() {
					// the cause may name store endpoints or host paths
					he = errf(he.status, api.CodeInternal, "", "internal error; the server's log has the details")
				}
			}
			if sw.status == 0 {
				writeJSON(sw, he.status, he.body)
			}
			failed = he
		}
		code := sw.status
		if code == 0 {
			code = http.StatusOK
		}
		if note != nil {
			s.auditRequest(r, route, e, p, code, failed, note, at)
		}
		s.metrics.APILatency.WithLabelValues(route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "code", code, "dur", time.Since(start))
	})
}
