package cli

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// balancerHandlers serve load balancers and scaling groups in memory: a
// balancer is served (observed running) at its second GET, a group's
// members come into service one per GET.
func (f *fakeServer) balancerHandlers() map[string]handler {
	lbs := map[string]*model.LoadBalancer{}
	groups := map[string]*model.ScalingGroup{}
	gets := map[string]int{}
	return map[string]handler{
		"GET /api/v1/lbs": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			out := api.LBList{LoadBalancers: []model.LoadBalancer{}}
			for _, b := range lbs {
				out.LoadBalancers = append(out.LoadBalancers, *b)
			}
			return out, nil
		},
		"POST /api/v1/lbs": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.LBCreateRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			b := &model.LoadBalancer{Meta: model.Meta{Name: req.Name}, Spec: req.Spec, Status: model.LBStatus{Phase: model.LBPending, VIP: "10.1.0.100"}}
			lbs[req.Name] = b
			w.WriteHeader(http.StatusCreated)
			return b, nil
		},
		"GET /api/v1/lbs/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			b := lbs[r.PathValue("name")]
			if b == nil {
				return nil, fail(404, api.CodeNotFound, "", "load balancer not found")
			}
			if gets[b.Name]++; gets[b.Name] >= 2 {
				b.Status.Host, b.Status.Phase = "h1", model.LBActive
				b.Status.Observed = &model.LBObserved{Running: true, Host: "h1"}
			}
			return b, nil
		},
		"PATCH /api/v1/lbs/{name}": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.LBPatchRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			return lbs[r.PathValue("name")], nil
		},
		"DELETE /api/v1/lbs/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			w.WriteHeader(http.StatusAccepted)
			return lbs[r.PathValue("name")], nil
		},
		"GET /api/v1/groups": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return api.GroupList{Groups: []model.ScalingGroup{}}, nil
		},
		"POST /api/v1/groups": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.GroupCreateRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			g := &model.ScalingGroup{Meta: model.Meta{Name: req.Name}, Spec: req.Spec, Status: model.GroupStatus{Desired: req.Spec.Min}}
			groups[req.Name] = g
			w.WriteHeader(http.StatusCreated)
			return g, nil
		},
		"GET /api/v1/groups/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			g := groups[r.PathValue("name")]
			if g == nil {
				return nil, fail(404, api.CodeNotFound, "", "group not found")
			}
			if len(g.Status.Members) < g.Status.Desired {
				g.Status.Members = append(g.Status.Members, model.GroupMember{VM: g.Name + "-x", State: model.GroupMemberInService})
			}
			return g, nil
		},
		"PATCH /api/v1/groups/{name}": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.GroupPatchRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			return groups[r.PathValue("name")], nil
		},
		"DELETE /api/v1/groups/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			w.WriteHeader(http.StatusAccepted)
			return groups[r.PathValue("name")], nil
		},
	}
}

func TestBalancerCommands(t *testing.T) {
	f := newFake(t)
	seed(f)
	for _, tc := range []struct {
		name     string
		args     []string
		pattern  string
		wantBody string
		out      string
	}{
		{"lb create waits", []string{"lb", "create", "web", "--network", "lan", "--listen", "80", "--members", "web1,web2", "--algorithm", "leastconn"},
			"POST /api/v1/lbs", `{"name":"web","spec":{"network":"lan","listen":80,"algorithm":"leastconn","members":{"vms":["web1","web2"]},"healthCheck":{}}}`, "h1"},
		{"lb create a group's", []string{"lb", "create", "api", "--network", "lan", "--listen", "443", "--member-port", "8443", "--members", "group:api", "--no-wait"},
			"POST /api/v1/lbs", `{"name":"api","spec":{"network":"lan","listen":443,"memberPort":8443,"algorithm":"roundrobin","members":{"group":"api"},"healthCheck":{}}}`, "pending"},
		{"lb set", []string{"lb", "set", "web", "--members", "web1"}, "PATCH /api/v1/lbs/{name}", `{"members":{"vms":["web1"]}}`, ""},
		{"lb delete", []string{"lb", "delete", "web"}, "DELETE /api/v1/lbs/{name}", "", "being deleted"},
		{"group create waits", []string{"group", "create", "web", "--template", `{"vcpus":1,"memory":"256MiB","nics":[{"network":"lan"}]}`,
			"--min", "2", "--max", "6", "--target-cpu", "60%", "--lb", "web"},
			"POST /api/v1/groups", `{"name":"web","spec":{"template":{"vcpus":1,"memory":268435456,"nics":[{"network":"lan"}],"placement":{},"controls":{},"power":""},"min":2,"max":6,"targetCpuPercent":60,"lb":"web","antiAffinity":"soft"}}`, "2"},
		{"group set", []string{"group", "set", "web", "--max", "8"}, "PATCH /api/v1/groups/{name}", `{"max":8}`, ""},
		{"group delete", []string{"group", "delete", "web"}, "DELETE /api/v1/groups/{name}", "", "being deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.cli(t, tc.args...)
			if res.code != 0 {
				t.Fatalf("code %d, stderr %q", res.code, res.stderr)
			}
			c := f.lastWrite(t)
			if c.Pattern != tc.pattern || (tc.wantBody != "" && c.Body != tc.wantBody) {
				t.Errorf("sent %s %s, want %s %s", c.Pattern, c.Body, tc.pattern, tc.wantBody)
			}
			if !strings.Contains(res.stdout, tc.out) {
				t.Errorf("stdout %q lacks %q", res.stdout, tc.out)
			}
		})
	}
	for _, bad := range [][]string{
		{"lb", "create", "x", "--listen", "80"},
		{"group", "create", "g", "--max", "3"},
		{"group", "create", "g", "--template", `{"vcpus":1,"bogus":2}`, "--max", "3"},
		{"group", "create", "g", "--template", `{"vcpus":1}`, "--max", "3", "--target-cpu", "lots"},
	} {
		if res := f.cli(t, bad...); res.code != 2 {
			t.Errorf("%v: code %d (stderr %q), want 2 (usage)", bad, res.code, res.stderr)
		}
	}
}
