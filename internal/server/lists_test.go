package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// seedVMs stores n VMs named vm-0000.. in project through the
// repository, 50 per transaction.
func seedVMs(t *testing.T, ts *testServer, project string, n int) {
	t.Helper()
	for i := 0; i < n; i += 50 {
		var vms []*model.VM
		for j := i; j < min(i+50, n); j++ {
			vms = append(vms, &model.VM{Meta: model.Meta{Name: fmt.Sprintf("vm-%04d", j)}, Spec: vmReq("").Spec})
		}
		if _, err := ts.Repo().CreateVMs(context.Background(), project, vms); err != nil {
			t.Fatal(err)
		}
	}
}

// pages follows continue tokens from path and returns every item's
// project/name in order and the number of pages.
func pages(t *testing.T, ts *testServer, path, token string) ([]string, int) {
	t.Helper()
	var keys []string
	next, n := "", 0
	for {
		p := path
		if next != "" {
			p += "&continue=" + url.QueryEscape(next)
		}
		var page api.VMList
		ts.mustCall(200, "GET", p, token, nil, &page)
		n++
		for _, v := range page.Items {
			keys = append(keys, v.Project+"/"+v.Name)
		}
		if page.Continue == "" {
			return keys, n
		}
		if len(page.Items) == 0 {
			t.Fatalf("an empty page with a continue token at %s", p)
		}
		next = page.Continue
	}
}

func TestVMListPages(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "alpha", Quota: model.Quota{VMs: 2000}}, nil)
	seedVMs(t, ts, "alpha", 1234)
	seedVMs(t, ts, "default", 60)
	var whole api.VMList
	ts.mustCall(200, "GET", "/api/v1/vms?all-projects=true", admin, nil, &whole)
	if len(whole.Items) != 1294 || whole.Continue != "" {
		t.Fatalf("whole list: %d items, continue %q", len(whole.Items), whole.Continue)
	}
	keys, n := pages(t, ts, "/api/v1/vms?all-projects=true&limit=100", admin)
	if n != 13 || len(keys) != 1294 {
		t.Fatalf("%d pages of %d items, want 13 pages of 1294", n, len(keys))
	}
	for i, v := range whole.Items {
		if keys[i] != v.Project+"/"+v.Name {
			t.Fatalf("item %d: paged %s, whole %s/%s", i, keys[i], v.Project, v.Name)
		}
	}
	// one project, as its member sees it
	member := ts.tokenFor("alpha", model.RoleMember)
	keys, _ = pages(t, ts, "/api/v1/vms?limit=500", member)
	if len(keys) != 1234 || keys[0] != "alpha/vm-0000" || keys[1233] != "alpha/vm-1233" {
		t.Fatalf("member's pages: %d items, first %v", len(keys), keys[:1])
	}
	// a token of one listing is refused by another, and bad limits name the field
	var first api.VMList
	ts.mustCall(200, "GET", "/api/v1/vms?project=alpha&limit=10", admin, nil, &first)
	for _, c := range []struct{ path, field string }{
		{"/api/v1/vms?project=default&limit=10&continue=" + url.QueryEscape(first.Continue), "continue"},
		{"/api/v1/vms?limit=10&continue=garbage", "continue"},
		{"/api/v1/vms?limit=0", "limit"},
		{"/api/v1/vms?limit=" + fmt.Sprint(api.MaxPageLimit+1), "limit"},
		{"/api/v1/vms?consistent=maybe", "consistent"},
	} {
		code, e := ts.call("GET", c.path, admin, nil, nil)
		if code != 400 || e.Field != c.field {
			t.Errorf("%s: %d %+v, want 400 on %s", c.path, code, e, c.field)
		}
	}
	// a VM created between two pages shows up when it sorts after the cursor
	if _, err := ts.Repo().CreateVM(context.Background(), &model.VM{Meta: model.Meta{Name: "vm-0060", Project: "default"}, Spec: vmReq("").Spec}); err != nil {
		t.Fatal(err)
	}
	keys, _ = pages(t, ts, "/api/v1/vms?all-projects=true&limit=1000", admin)
	if len(keys) != 1295 || keys[len(keys)-1] != "default/vm-0060" {
		t.Fatalf("after a create: %d items, last %s", len(keys), keys[len(keys)-1])
	}
}

// A list answers with what was written just before it, even though it is
// served from a cache fed by a watch.
func TestListReadsYourWrites(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	for i := range 20 {
		name := fmt.Sprintf("w%d", i)
		if _, err := ts.Repo().CreateVM(context.Background(), &model.VM{Meta: model.Meta{Name: name, Project: "default"}, Spec: vmReq("").Spec}); err != nil {
			t.Fatal(err)
		}
		var list api.VMList
		ts.mustCall(200, "GET", "/api/v1/vms?limit=100", admin, nil, &list)
		if len(list.Items) != i+1 {
			t.Fatalf("after creating %s the list has %d VMs", name, len(list.Items))
		}
	}
}

func TestHostListPages(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	for i := range 25 {
		if _, err := ts.Repo().UpsertHost(ctx, fmt.Sprintf("h%02d", i), func(h *model.Host, _ bool) error {
			h.State, h.Capacity = model.HostReady, model.Resources{CPUs: 8, Memory: 16 * model.GiB}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	next := ""
	for range 10 {
		var page api.HostList
		path := "/api/v1/hosts?limit=10"
		if next != "" {
			path += "&continue=" + url.QueryEscape(next)
		}
		ts.mustCall(200, "GET", path, ts.AdminToken(), nil, &page)
		for _, h := range page.Items {
			names = append(names, h.Name)
		}
		if next = page.Continue; next == "" {
			break
		}
	}
	if len(names) != 25 || names[0] != "h00" || names[24] != "h24" {
		t.Fatalf("host pages: %v", names)
	}
}

// watchCounter counts the watches opened on a store.
type watchCounter struct {
	store.Store
	n atomic.Int32
}

func (w *watchCounter) Watch(ctx context.Context, prefix string, from int64) <-chan store.WatchResponse {
	w.n.Add(1)
	return w.Store.Watch(ctx, prefix, from)
}

// Agents' long polls wait on the server's cache: however many hosts
// poll, the server opens no watch of its own per poll (before, every
// poll watched the whole VM prefix, so each VM write was sent to every
// waiting host).
func TestLongPollsOpenNoWatches(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	st := &watchCounter{Store: mem}
	ts := startServer(t, st)
	const hosts = 20
	agents := make([]*testAgent, hosts)
	for i := range agents {
		agents[i] = joinAgent(t, ts, fmt.Sprintf("h%d", i))
		agents[i].beat()
	}
	var first api.Assignments
	agents[0].do("GET", "/agent/v1/assignments", nil, &first)
	time.Sleep(50 * time.Millisecond) // the server's own watches are open
	before := st.n.Load()
	var wg sync.WaitGroup
	woke := make([]api.Assignments, hosts)
	for i, a := range agents {
		wg.Go(func() {
			a.do("GET", fmt.Sprintf("/agent/v1/assignments?after=%d&wait=20s", first.Revision), nil, &woke[i])
		})
		wg.Go(func() {
			var m api.AgentMigrations
			a.do("GET", fmt.Sprintf("/agent/v1/migrations?after=%d&wait=300ms", first.Revision), nil, &m)
		})
	}
	time.Sleep(100 * time.Millisecond)
	// one VM lands on every host: every poll wakes with its own VM
	ctx := context.Background()
	for i := range hosts {
		name := fmt.Sprintf("v%d", i)
		ts.mustCall(201, "POST", "/api/v1/vms", ts.AdminToken(), vmReq(name), nil)
		if _, err := ts.Repo().UpdateVM(ctx, "default", name, func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = fmt.Sprintf("h%d", i), model.PhaseCreating
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for i, as := range woke {
		if len(as.VMs) != 1 || as.VMs[0].Name != fmt.Sprintf("v%d", i) || !strings.HasPrefix(as.VMs[0].Status.Host, "h") {
			t.Fatalf("host h%d woke with %+v", i, as.VMs)
		}
	}
	if opened := st.n.Load() - before; opened != 0 {
		t.Fatalf("%d long polls opened %d store watches", 2*hosts, opened)
	}
}

// slowWatch delivers every watch response late, as a loaded server's
// watch does.
type slowWatch struct {
	store.Store
	delay time.Duration
}

func (s *slowWatch) Watch(ctx context.Context, prefix string, from int64) <-chan store.WatchResponse {
	in := s.Store.Watch(ctx, prefix, from)
	out := make(chan store.WatchResponse, 16)
	go func() {
		defer close(out)
		for r := range in {
			time.Sleep(s.delay)
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// A consistent read (GET vm, a list's first page, the defaults) sees
// every write acknowledged before it started, even when the watch that
// feeds the server's cache is late; consistent=false may not.
func TestConsistentReadsSeeAcknowledgedWrites(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	ts := startServer(t, &slowWatch{Store: mem, delay: 30 * time.Millisecond})
	admin := ts.AdminToken()
	ctx := context.Background()
	for i := range 8 {
		name := fmt.Sprintf("c%d", i)
		created, err := ts.Repo().CreateVM(ctx, &model.VM{Meta: model.Meta{Name: name, Project: "default"}, Spec: vmReq("").Spec})
		if err != nil {
			t.Fatal(err)
		}
		var got model.VM
		ts.mustCall(200, "GET", "/api/v1/vms/"+name, admin, nil, &got)
		if got.Revision != created.Revision {
			t.Fatalf("GET %s after its create at %d: revision %d", name, created.Revision, got.Revision)
		}
		updated, err := ts.Repo().UpdateVM(ctx, "default", name, func(v *model.VM) error {
			v.Spec.Labels = map[string]string{"step": "two"}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// the list first: nothing before it waited for the update
		var list api.VMList
		ts.mustCall(200, "GET", "/api/v1/vms?limit=100", admin, nil, &list)
		if len(list.Items) != i+1 || list.Items[i].Revision != updated.Revision {
			t.Fatalf("the list after the update of %s at %d: %d items", name, updated.Revision, len(list.Items))
		}
		ts.mustCall(200, "GET", "/api/v1/vms/"+name, admin, nil, &got)
		if got.Revision != updated.Revision || got.Spec.Labels["step"] != "two" {
			t.Fatalf("GET %s after its update at %d: revision %d, labels %v", name, updated.Revision, got.Revision, got.Spec.Labels)
		}
	}
	if err := ts.Repo().FinishDeleteVM(ctx, "default", "c0"); err != nil {
		t.Fatal(err)
	}
	ts.mustCall(404, "GET", "/api/v1/vms/c0", admin, nil, nil)
}

// min-revision answers once the cache holds the client's own write,
// without a read of the store's revision; one past the store's is
// refused, naming the field.
func TestMinRevisionWaitsForTheCacheOnly(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	ts := startServer(t, &slowWatch{Store: mem, delay: 30 * time.Millisecond})
	admin := ts.AdminToken()
	ctx := context.Background()
	if _, err := ts.view.consistent(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		name := fmt.Sprintf("m%d", i)
		created, err := ts.Repo().CreateVM(ctx, &model.VM{Meta: model.Meta{Name: name, Project: "default"}, Spec: vmReq("").Spec})
		if err != nil {
			t.Fatal(err)
		}
		rev := fmt.Sprint(created.Revision)
		// the server's own passes (the dashboard's history, metering)
		// read the revision now and then too: a try that met one is
		// tried again, while reading it on every try is the failure
		var n int64
		for range 3 {
			reads := ts.view.c.RevReads()
			var list api.VMList
			ts.mustCall(200, "GET", "/api/v1/vms?limit=100&min-revision="+rev, admin, nil, &list)
			if len(list.Items) != i+1 || list.Items[i].Name != name {
				t.Fatalf("the list at min-revision %s after creating %s: %d items", rev, name, len(list.Items))
			}
			var got model.VM
			ts.mustCall(200, "GET", "/api/v1/vms/"+name+"?min-revision="+rev, admin, nil, &got)
			if got.Revision != created.Revision {
				t.Fatalf("GET %s at min-revision %s: revision %d", name, rev, got.Revision)
			}
			if n = ts.view.c.RevReads() - reads; n == 0 {
				break
			}
		}
		if n != 0 {
			t.Fatalf("min-revision read the store's revision in each of 3 tries (%d times in the last)", n)
		}
	}
	code, e := ts.call("GET", "/api/v1/vms?min-revision=999999", admin, nil, nil)
	if code != 400 || e.Field != "min-revision" {
		t.Fatalf("a min-revision past the store: %d %+v", code, e)
	}
	code, e = ts.call("GET", "/api/v1/vms/m0?min-revision=x", admin, nil, nil)
	if code != 400 || e.Field != "min-revision" {
		t.Fatalf("a bad min-revision: %d %+v", code, e)
	}
}

// A consistent page says where its time went: the store's revision and
// the cache's wait in a Server-Timing header, the handler's whole time
// in a trailer (BenchmarkFleet reads both).
func TestListServerTiming(t *testing.T) {
	ts := startServer(t, nil)
	req, _ := http.NewRequest("GET", "http://"+ts.Addr()+"/api/v1/vms?limit=10", nil)
	req.Header.Set("Authorization", "Bearer "+ts.AdminToken())
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h, tr := resp.Header.Get("Server-Timing"), resp.Trailer.Get("Server-Timing")
	if !strings.Contains(h, "rev;dur=") || !strings.Contains(h, "wait;dur=") || !strings.HasPrefix(tr, "handler;dur=") {
		t.Fatalf("Server-Timing header %q, trailer %q", h, tr)
	}
}
