package fleet

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// A delta answer reports the VMs it names, forgets those it says left,
// keeps the others, and sends a failed report again at the next answer
// (a delta does not list its VM again); a full answer forgets the VMs
// it does not list.
func TestApplyDelta(t *testing.T) {
	var mu sync.Mutex
	var reported []string
	fail := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep api.VMReport
		_ = json.NewDecoder(r.Body).Decode(&rep)
		mu.Lock()
		defer mu.Unlock()
		if fail[rep.Name] {
			delete(fail, rep.Name)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		reported = append(reported, rep.Name+":"+string(rep.Phase))
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	f := &Fleet{cfg: Config{Servers: []string{srv.URL}}}
	h := &host{f: f, name: "h", client: srv.Client(), vms: map[string]*simVM{}}
	vm := func(name string, phase model.Phase) model.VM {
		return model.VM{Meta: model.Meta{Name: name, Project: "p", UID: "u-" + name},
			Spec: model.VMSpec{Power: model.PowerRunning}, Status: model.VMStatus{Host: "h", Phase: phase}}
	}
	held := func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		var out []string
		for k := range h.vms {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	took := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := reported
		reported = nil
		slices.Sort(out)
		return out
	}
	ctx := context.Background()
	mu.Lock()
	fail["b"] = true
	mu.Unlock()
	h.apply(ctx, api.Assignments{VMs: []model.VM{vm("a", model.PhaseCreating), vm("b", model.PhaseCreating), vm("c", model.PhaseRunning)}})
	if got := took(); !slices.Equal(got, []string{"a:running"}) {
		t.Fatalf("first answer reported %v", got)
	}
	h.apply(ctx, api.Assignments{Delta: true, VMs: []model.VM{vm("d", model.PhaseCreating)}, Removed: []string{"p/c"}})
	if got := took(); !slices.Equal(got, []string{"b:running", "d:running"}) {
		t.Fatalf("a delta reported %v, want d and the failed b again", got)
	}
	if got := held(); !slices.Equal(got, []string{"p/a", "p/b", "p/d"}) {
		t.Fatalf("after the delta the host holds %v", got)
	}
	h.apply(ctx, api.Assignments{Delta: true})
	if got := took(); len(got) != 0 {
		t.Fatalf("an empty delta reported %v", got)
	}
	h.apply(ctx, api.Assignments{VMs: []model.VM{vm("a", model.PhaseRunning)}})
	if got := held(); !slices.Equal(got, []string{"p/a"}) {
		t.Fatalf("after a full answer the host holds %v", got)
	}
}
