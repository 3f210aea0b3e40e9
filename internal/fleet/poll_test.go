package fleet

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

// A fleet host holds the long polls an agent holds (api.AgentLongPolls,
// which internal/agent checks against a real agent), with their cursors;
// OnlyAssignments holds the assignments' alone, as the fleet did before.
func TestHostHoldsAnAgentsLongPolls(t *testing.T) {
	for _, only := range []bool{false, true} {
		var mu sync.Mutex
		polls := map[string][]string{} // path → raw queries
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("wait") {
				mu.Lock()
				polls[strings.TrimPrefix(r.URL.Path, api.AgentPrefix+"/")] = append(polls[strings.TrimPrefix(r.URL.Path, api.AgentPrefix+"/")], r.URL.RawQuery)
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
			_ = json.NewEncoder(w).Encode(map[string]any{"revision": 7})
		}))
		f := &Fleet{cfg: Config{Servers: []string{srv.URL}, PollWait: 50 * time.Millisecond, OnlyAssignments: only}, log: slog.New(slog.DiscardHandler)}
		h := &host{f: f, name: "h", client: srv.Client(), vms: map[string]*simVM{}}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { h.pollLoop(ctx) })
		if !only {
			for _, p := range sidePolls {
				wg.Go(func() { h.sideLoop(ctx, p) })
			}
		}
		time.Sleep(300 * time.Millisecond)
		cancel()
		wg.Wait()
		srv.Close()
		var got []string
		for p, qs := range polls {
			got = append(got, p)
			if p != "consoles" && len(qs) > 1 && !strings.Contains(qs[len(qs)-1], "after=7") {
				t.Errorf("%s polled again with %q: the answer's revision is not its cursor", p, qs[len(qs)-1])
			}
		}
		slices.Sort(got)
		want := api.AgentLongPolls
		if only {
			want = []string{"assignments"}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("OnlyAssignments %v: the host long-polls %v, an agent %v", only, got, want)
		}
	}
}
