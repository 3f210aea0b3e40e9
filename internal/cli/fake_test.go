package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// now is the fixed clock of every CLI test.
var now = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const goodToken = "good-token"

// call is one request the fake server saw.
type call struct {
	Pattern string
	Query   string
	Body    string
	Token   string
}

// fakeServer is an in-memory vpool API honouring api.Routes. VMs walk
// through scripted phases, one step per GET, so --wait can be tested.
type fakeServer struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	calls    []call
	vms      map[string]*model.VM // project/name
	scripts  map[string][]model.VMStatus
	hosts    map[string]*model.Host
	projects map[string]*api.ProjectView
	tokens   []model.Token
	policy   model.Policy
	events   []model.Event
	dryRun   api.DryRunResponse
	// stream is sent to `GET /events?follow=true`, which then stays open.
	stream []model.Event
	// images are the images of the fake, by name.
	images map[string]*model.Image
	// afterPower, when set, runs after a start or stop changed a VM.
	afterPower func(vm *model.VM)
	// anyToken accepts every token (config precedence tests).
	anyToken bool
}

func newFake(t *testing.T) *fakeServer { return startFake(t, false) }

// newFakeTLS serves the fake over https with httptest's certificate.
func newFakeTLS(t *testing.T) *fakeServer { return startFake(t, true) }

func startFake(t *testing.T, tls bool) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, vms: map[string]*model.VM{}, scripts: map[string][]model.VMStatus{},
		hosts: map[string]*model.Host{}, projects: map[string]*api.ProjectView{}, policy: model.DefaultPolicy()}
	f.projects["default"] = &api.ProjectView{Project: model.Project{Meta: model.Meta{Name: "default", CreatedAt: now.Add(-72 * time.Hour)}}}
	mux := http.NewServeMux()
	handlers := f.handlers()
	for _, r := range api.Routes {
		pattern := r.Method + " " + r.Path
		h, ok := handlers[pattern]
		if !ok {
			t.Fatalf("fake server has no handler for %s", pattern)
		}
		mux.HandleFunc(pattern, f.wrap(h))
	}
	if tls {
		f.srv = httptest.NewTLSServer(mux)
	} else {
		f.srv = httptest.NewServer(mux)
	}
	t.Cleanup(f.srv.Close)
	return f
}

type handler func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr)

type apiErr struct {
	status int
	api.Error
}

func fail(status int, code, field, format string, args ...any) *apiErr {
	return &apiErr{status, api.Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}}
}

func (f *fakeServer) wrap(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		f.calls = append(f.calls, call{Pattern: r.Pattern, Query: r.URL.RawQuery, Body: string(body), Token: tok})
		f.mu.Unlock()
		if !f.anyToken && tok != goodToken {
			writeJSON(w, 401, api.Error{Code: api.CodeUnauthorized, Message: "missing or unknown bearer token"})
			return
		}
		f.mu.Lock()
		out, e := h(w, r, body)
		f.mu.Unlock()
		switch {
		case e != nil:
			writeJSON(w, e.status, e.Error)
		case out == nil:
			w.WriteHeader(http.StatusNoContent)
		case out != streamed:
			writeJSON(w, 200, out)
		}
	}
}

// streamed says the handler wrote its own answer.
var streamed = &struct{}{}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func decodeStrict(body []byte, v any) *apiErr {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fail(400, api.CodeBadRequest, "", "bad request body: %v", err)
	}
	return nil
}

func project(r *http.Request) string {
	if p := r.URL.Query().Get("project"); p != "" {
		return p
	}
	return "default"
}

// seen returns the calls seen so far.
func (f *fakeServer) seen() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// lastWrite returns the last call that was not a GET.
func (f *fakeServer) lastWrite(t *testing.T) call {
	t.Helper()
	cs := f.seen()
	for i := len(cs) - 1; i >= 0; i-- {
		if !strings.HasPrefix(cs[i].Pattern, "GET ") {
			return cs[i]
		}
	}
	t.Fatal("no write request reached the fake server")
	return call{}
}

// addVM stores a VM with a script of statuses it walks through on GETs.
func (f *fakeServer) addVM(vm model.VM, script ...model.VMStatus) {
	if vm.Project == "" {
		vm.Project = "default"
	}
	if vm.CreatedAt.IsZero() {
		vm.CreatedAt = now.Add(-5 * time.Minute)
	}
	f.vms[vm.Key()] = &vm
	f.scripts[vm.Key()] = script
}

// gone is a script step meaning "deleted".
var gone = model.VMStatus{Phase: "gone"}

func (f *fakeServer) createVM(p string, req api.VMCreateRequest) (*model.VM, *apiErr) {
	spec := req.Spec
	if err := model.ValidName("name", req.Name); err != nil {
		return nil, fail(400, api.CodeInvalidField, "name", "%v", err)
	}
	if err := spec.Validate(); err != nil {
		fe := err.(*model.FieldError)
		return nil, fail(400, api.CodeInvalidField, fe.Field, "%s", fe.Message)
	}
	if _, ok := f.projects[p]; !ok {
		return nil, fail(404, api.CodeNotFound, "", "project %s not found", p)
	}
	vm := model.VM{Meta: model.Meta{Name: req.Name, Project: p, UID: "uid-" + req.Name}, Spec: spec,
		Status: model.VMStatus{Phase: model.PhasePending}}
	if _, ok := f.vms[vm.Key()]; ok {
		return nil, fail(409, api.CodeConflict, "name", "vm %s already exists in project %s", req.Name, p)
	}
	end := model.VMStatus{Phase: model.PhaseRunning, Host: "h1"}
	if spec.Power == model.PowerStopped {
		end.Phase = model.PhaseStopped
	}
	script := []model.VMStatus{{Phase: model.PhaseScheduling}, {Phase: model.PhaseCreating, Host: "h1", Message: "cloning image"}, end}
	if strings.HasPrefix(req.Name, "fail") {
		script = []model.VMStatus{{Phase: model.PhaseScheduling}, {Phase: model.PhaseFailed, Host: "h1", LastError: "disk image not found"}}
	}
	if strings.HasPrefix(req.Name, "slow") {
		script = nil
	}
	if strings.HasPrefix(req.Name, "nofit") {
		expl := &model.Explanation{Hosts: 2, Summary: "no host has 64 free vCPUs"}
		script = []model.VMStatus{{Phase: model.PhasePending, Explanation: expl, Message: "waiting for capacity: " + expl.Summary}}
	}
	f.addVM(vm, script...)
	return f.vms[vm.Key()], nil
}

func (f *fakeServer) vm(r *http.Request) (*model.VM, *apiErr) {
	p, name := project(r), r.PathValue("name")
	vm, ok := f.vms[p+"/"+name]
	if !ok {
		return nil, fail(404, api.CodeNotFound, "", "vm %s not found in project %s", name, p)
	}
	return vm, nil
}

// step advances a VM along its script and reports whether it is gone.
func (f *fakeServer) step(vm *model.VM) bool {
	key := vm.Key()
	s := f.scripts[key]
	if len(s) == 0 {
		return false
	}
	next := s[0]
	f.scripts[key] = s[1:]
	if next.Phase == gone.Phase {
		delete(f.vms, key)
		return true
	}
	next.AppliedRestartNonce = max(next.AppliedRestartNonce, vm.Status.AppliedRestartNonce)
	vm.Status = next
	return false
}

func (f *fakeServer) handlers() map[string]handler {
	all := map[string]handler{}
	for _, m := range []map[string]handler{f.clusterHandlers(), f.projectHandlers(), f.vmHandlers(), f.hostHandlers(), f.balanceHandlers(), f.migrationHandlers(), f.vmOpHandlers(), f.imageHandlers(), f.networkHandlers(), f.balancerHandlers(), f.memberHandlers(), f.auditHandlers(), f.usageHandlers(), f.complianceHandlers(), f.backupHandlers()} {
		for k, h := range m {
			all[k] = h
		}
	}
	return all
}

func (f *fakeServer) clusterHandlers() map[string]handler {
	return map[string]handler{
		"GET /api/v1/openapi.json": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return map[string]string{"openapi": "3.0.3"}, nil
		},
		"GET /api/v1/cluster": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return api.ClusterInfo{Version: "9.9.9", Leader: "server-1", Server: "server-1", Store: "embedded",
				CAHash: "ab12", Hosts: len(f.hosts), VMs: len(f.vms), Projects: len(f.projects)}, nil
		},
		"GET /api/v1/cluster/policy": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return f.policy, nil
		},
		"GET /api/v1/ha": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			fenced := now.Add(-10 * time.Minute)
			return api.HAStatus{Policy: f.policy.HAPolicy(), Hosts: map[string]int{"ready": 2, "fenced": 1},
				Protected:   map[string]int{"high": 1, "medium": 3},
				Unprotected: []model.HAStuck{{VM: "default/db", Reason: "disk root is on local storage: it cannot restart on another host"}},
				Reserve:     api.HAReserve{Tolerates: 1, OK: true, Worst: []string{"h1"}, Need: model.Resources{CPUs: 4, Memory: 8 * model.GiB}, Spare: model.Resources{CPUs: 12, Memory: 24 * model.GiB}},
				Failovers: []model.HAFailover{{Host: "h3", LastRenewal: fenced.Add(-5 * time.Second), DetectedAt: fenced.Add(-2500 * time.Millisecond),
					FencedAt: fenced, FenceBy: "timeout", RestartedAt: fenced.Add(300 * time.Millisecond), Restarted: 4,
					Stuck: []model.HAStuck{{VM: "default/db", Reason: "local storage"}}},
					{Host: "h2", LastRenewal: fenced.Add(-time.Hour - 8*time.Second), DetectedAt: fenced.Add(-time.Hour - 4*time.Second),
						FencedAt: fenced.Add(-time.Hour), FenceBy: "timeout", FenceCommandError: "fence: exit status 1: bmc unreachable",
						RestartedAt: fenced.Add(-time.Hour + 200*time.Millisecond), Restarted: 2},
					{Host: "h1", LastRenewal: fenced.Add(-2*time.Hour - 4500*time.Millisecond), DetectedAt: fenced.Add(-2*time.Hour - 500*time.Millisecond),
						FencedAt: fenced.Add(-2 * time.Hour), FenceBy: "command", RestartedAt: fenced.Add(-2*time.Hour + 200*time.Millisecond), Restarted: 3}}}, nil
		},
		"PUT /api/v1/cluster/policy": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var p model.Policy
			if e := decodeStrict(body, &p); e != nil {
				return nil, e
			}
			if err := p.Validate(); err != nil {
				fe := err.(*model.FieldError)
				return nil, fail(400, api.CodeInvalidField, fe.Field, "%s", fe.Message)
			}
			f.policy = p
			return p, nil
		},
	}
}

func (f *fakeServer) projectHandlers() map[string]handler {
	return map[string]handler{
		"GET /api/v1/projects": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			var out api.ProjectList
			for _, p := range f.projects {
				out.Items = append(out.Items, *p)
			}
			return out, nil
		},
		"POST /api/v1/projects": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.ProjectCreateRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			if _, ok := f.projects[req.Name]; ok {
				return nil, fail(409, api.CodeConflict, "name", "project %s already exists", req.Name)
			}
			p := &api.ProjectView{Project: model.Project{Meta: model.Meta{Name: req.Name, CreatedAt: now}, Description: req.Description, Quota: req.Quota}}
			f.projects[req.Name] = p
			return p, nil
		},
		"GET /api/v1/projects/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			p, ok := f.projects[r.PathValue("name")]
			if !ok {
				return nil, fail(404, api.CodeNotFound, "", "project %s not found", r.PathValue("name"))
			}
			return p, nil
		},
		"PATCH /api/v1/projects/{name}": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			p, ok := f.projects[r.PathValue("name")]
			if !ok {
				return nil, fail(404, api.CodeNotFound, "", "project %s not found", r.PathValue("name"))
			}
			var req api.ProjectPatchRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			if req.Quota != nil {
				p.Quota = *req.Quota
			}
			if req.Description != nil {
				p.Description = *req.Description
			}
			return p, nil
		},
		"DELETE /api/v1/projects/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			if _, ok := f.projects[r.PathValue("name")]; !ok {
				return nil, fail(404, api.CodeNotFound, "", "project %s not found", r.PathValue("name"))
			}
			delete(f.projects, r.PathValue("name"))
			return nil, nil
		},
	}
}

func (f *fakeServer) vmHandlers() map[string]handler {
	return map[string]handler{
		"GET /api/v1/vms": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			out := api.VMList{Revision: 77, Items: []model.VM{}}
			all := r.URL.Query().Get("all-projects") == "true"
			for _, vm := range f.vms {
				if all || vm.Project == project(r) {
					out.Items = append(out.Items, *vm)
				}
			}
			return out, nil
		},
		"POST /api/v1/vms": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.VMCreateRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			if req.DryRun {
				return f.dryRun, nil
			}
			return f.createVM(project(r), req)
		},
		"POST /api/v1/vms:batch": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.VMBatchRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			if req.DryRun {
				out := make([]api.DryRunResponse, req.Count)
				for i := range out {
					out[i] = f.dryRun
				}
				if req.Count > 2 { // the third and later would not fit
					for i := 2; i < req.Count; i++ {
						out[i] = api.DryRunResponse{Explanation: &model.Explanation{Hosts: 2, Summary: "no host has room",
							Filters: []model.FilterOut{{Filter: "resources", Rejected: 2, Reason: "not enough memory"}}}}
					}
				}
				return out, nil
			}
			out := api.VMBatchResponse{}
			for i := 1; i <= req.Count; i++ {
				vm, e := f.createVM(project(r), api.VMCreateRequest{Name: req.Prefix + "-" + strconv.Itoa(i), Spec: *req.Spec})
				if e != nil {
					return nil, e
				}
				out.VMs = append(out.VMs, *vm)
			}
			return out, nil
		},
		"GET /api/v1/vms/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			if f.step(vm) {
				return nil, fail(404, api.CodeNotFound, "", "vm %s not found in project %s", vm.Name, vm.Project)
			}
			return vm, nil
		},
		"PATCH /api/v1/vms/{name}": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			var req api.VMPatchRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			if req.VCPUs != nil {
				vm.Spec.VCPUs = *req.VCPUs
			}
			if req.Memory != nil {
				vm.Spec.Memory = *req.Memory
			}
			return vm, nil
		},
		"DELETE /api/v1/vms/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			vm.Status.Phase = model.PhaseDeleting
			f.scripts[vm.Key()] = []model.VMStatus{{Phase: model.PhaseDeleting, Host: vm.Status.Host}, gone}
			return nil, nil
		},
		"POST /api/v1/vms/{name}/start": f.power(model.PowerRunning, model.PhaseCreating, model.PhaseRunning),
		"POST /api/v1/vms/{name}/stop":  f.power(model.PowerStopped, model.PhaseStopping, model.PhaseStopped),
		"POST /api/v1/vms/{name}/restart": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			vm.Spec.RestartNonce++
			n := vm.Spec.RestartNonce
			f.scripts[vm.Key()] = []model.VMStatus{
				{Phase: model.PhaseRunning, Host: vm.Status.Host, Message: "restarting"},
				{Phase: model.PhaseRunning, Host: vm.Status.Host, AppliedRestartNonce: n}}
			return vm, nil
		},
	}
}

func (f *fakeServer) hostHandlers() map[string]handler {
	return map[string]handler{
		"GET /api/v1/hosts": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			out := api.HostList{Items: []model.Host{}}
			for _, h := range f.hosts {
				out.Items = append(out.Items, *h)
			}
			return out, nil
		},
		"GET /api/v1/hosts/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return f.host(r)
		},
		"PATCH /api/v1/hosts/{name}": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			h, e := f.host(r)
			if e != nil {
				return nil, e
			}
			var req api.HostPatchRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			if req.Labels != nil {
				h.Labels = req.Labels
			}
			if req.Cordoned != nil {
				h.Cordoned = *req.Cordoned
			}
			return h, nil
		},
		"DELETE /api/v1/hosts/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			h, e := f.host(r)
			if e != nil {
				return nil, e
			}
			if h.VMs > 0 {
				return nil, fail(409, api.CodeConflict, "", "host %s still has %d VMs", h.Name, h.VMs)
			}
			delete(f.hosts, h.Name)
			return nil, nil
		},
		"POST /api/v1/hosts/join-tokens": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.JoinTokenRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			uses := req.Uses
			if uses == 0 {
				uses = 1
			}
			return api.JoinTokenResponse{Token: "vpool1.ab12.secret", ExpiresAt: now.Add(time.Hour), AgentAddr: "127.0.0.1:8441", Uses: uses}, nil
		},
		"POST /api/v1/hosts/{name}/rekey": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.HostRekeyRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			h, e := f.host(r)
			if e != nil {
				return nil, e
			}
			return api.JoinTokenResponse{Token: "vpool1.ab12.rekey", ExpiresAt: now.Add(time.Hour), AgentAddr: "127.0.0.1:8441", Uses: 1, Host: h.Name}, nil
		},
		"GET /api/v1/tokens": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return api.TokenList{Items: f.tokens}, nil
		},
		"POST /api/v1/tokens": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.TokenCreateRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			if req.Role == "" {
				req.Role = model.RoleMember
			}
			t := model.Token{ID: "tok-" + strconv.Itoa(len(f.tokens)+1), Project: req.Project, Role: req.Role, CreatedAt: now}
			f.tokens = append(f.tokens, t)
			return api.TokenCreateResponse{Token: t, Secret: "vpt_supersecret"}, nil
		},
		"DELETE /api/v1/tokens/{id}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			for i, t := range f.tokens {
				if t.ID == r.PathValue("id") {
					f.tokens = append(f.tokens[:i], f.tokens[i+1:]...)
					return nil, nil
				}
			}
			return nil, fail(404, api.CodeNotFound, "", "token %s not found", r.PathValue("id"))
		},
		"GET /api/v1/events": f.listEvents,
	}
}

func (f *fakeServer) power(want model.PowerState, via, end model.Phase) handler {
	return func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
		vm, e := f.vm(r)
		if e != nil {
			return nil, e
		}
		vm.Spec.Power = want
		host := vm.Status.Host
		f.scripts[vm.Key()] = []model.VMStatus{{Phase: via, Host: host}, {Phase: end, Host: host}}
		if f.afterPower != nil {
			f.afterPower(vm)
		}
		return vm, nil
	}
}

func (f *fakeServer) host(r *http.Request) (*model.Host, *apiErr) {
	h, ok := f.hosts[r.PathValue("name")]
	if !ok {
		return nil, fail(404, api.CodeNotFound, "", "host %s not found", r.PathValue("name"))
	}
	return h, nil
}

func (f *fakeServer) listEvents(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
	q := r.URL.Query()
	since, _ := strconv.ParseInt(q.Get("since"), 10, 64)
	var items []model.Event
	for _, ev := range f.events {
		if ev.ID > since && (q.Get("project") == "" || ev.Project == q.Get("project")) {
			items = append(items, ev)
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].ID < items[j].ID })
	if q.Get("follow") != "true" {
		return api.EventList{Items: items}, nil
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(200)
	enc := json.NewEncoder(w)
	for _, ev := range f.stream {
		if ev.ID > since {
			_ = enc.Encode(ev)
		}
	}
	w.(http.Flusher).Flush()
	// Hold the stream open like a real server, without holding the lock.
	f.mu.Unlock()
	<-r.Context().Done()
	f.mu.Lock()
	return streamed, nil
}
