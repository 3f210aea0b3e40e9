package server

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// placeWithExplanation places project/name on host as the controllers'
// gate does (state.Assign) with an explanation whose summary is marker.
func placeWithExplanation(t testing.TB, ts *testServer, project, name, host, marker string) {
	t.Helper()
	ctx := context.Background()
	vm, err := ts.Repo().GetVM(ctx, project, name)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ts.Repo().GetAllocation(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	e := &model.Explanation{Hosts: 2, Chosen: host, Summary: marker,
		Filters:    []model.FilterOut{{Filter: "fit", Rejected: 1, Reason: "insufficient memory"}},
		Candidates: []model.Candidate{{Host: host, Score: 0.8, Parts: map[string]float64{"binpack": 0.5, "balance": 0.3}}}}
	if _, ok, err := ts.Repo().Assign(ctx, []state.Assignment{{VM: vm, Host: host, Explanation: e}}, map[string]model.Allocation{host: *a}, 0); err != nil || !ok {
		t.Fatalf("Assign = %v, %v", ok, err)
	}
}

// TestPlacementExplanationThroughAPI: a placement's explanation is not in
// the VM's stored record nor in the list, GET vm shows it to those who
// may read the VM and to no one else, a record stored with the
// explanation inside (before they were kept apart) still shows it, and
// it is gone with the VM.
func TestPlacementExplanationThroughAPI(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	admin := ts.AdminToken()
	for _, p := range []string{"p", "q"} {
		ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: p}, nil)
	}
	viewer, other := ts.tokenFor("p", model.RoleViewer), ts.tokenFor("q", model.RoleMember)
	ts.mustCall(201, "POST", "/api/v1/vms?project=p", admin, vmReq("web"), nil)
	const marker = "placed on h1: the marker of web's explanation"
	placeWithExplanation(t, ts, "p", "web", "h1", marker)

	kv, err := ts.st.Get(ctx, store.VMKey("p", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(kv.Value, []byte(marker)) || bytes.Contains(kv.Value, []byte("binpack")) {
		t.Fatalf("the stored record carries the explanation: %s", kv.Value)
	}

	var got model.VM
	ts.mustCall(200, "GET", "/api/v1/vms/web?project=p", viewer, nil, &got)
	ex := got.Status.Explanation
	if ex == nil || ex.Summary != marker || ex.Chosen != "h1" || len(ex.Candidates) != 1 || ex.Candidates[0].Parts["binpack"] != 0.5 || len(ex.Filters) != 1 {
		t.Fatalf("GET vm: explanation %+v", ex)
	}
	var list api.VMList
	ts.mustCall(200, "GET", "/api/v1/vms?project=p", viewer, nil, &list)
	if len(list.Items) != 1 || list.Items[0].Status.Explanation != nil || list.Items[0].Status.Host != "h1" {
		t.Fatalf("the list carries %+v", list.Items)
	}

	// another project's tenant reads neither the VM nor its explanation
	for _, path := range []string{"/api/v1/vms/web?project=p", "/api/v1/vms/web?project=q", "/api/v1/vms/web"} {
		if code, e := ts.call("GET", path, other, nil, &got); code != 403 && code != 404 || strings.Contains(e.Message, marker) {
			t.Errorf("GET %s by project q's member = %d %+v, want 403 or 404", path, code, e)
		}
	}

	// a record stored by a server from before: the explanation inside
	ts.mustCall(201, "POST", "/api/v1/vms?project=p", admin, vmReq("old"), nil)
	const oldMarker = "placed on h2 by a server from before"
	if _, err := ts.Repo().UpdateVM(ctx, "p", "old", func(v *model.VM) error {
		v.Status.Host, v.Status.Phase = "h2", model.PhaseRunning
		v.Status.Explanation = &model.Explanation{Hosts: 2, Chosen: "h2", Summary: oldMarker}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ts.mustCall(200, "GET", "/api/v1/vms/old?project=p", viewer, nil, &got)
	if ex := got.Status.Explanation; ex == nil || ex.Summary != oldMarker {
		t.Fatalf("old record: explanation %+v", ex)
	}

	// deleted with the VM (the agent finishes the delete of a placed VM)
	ts.mustCall(202, "DELETE", "/api/v1/vms/web?project=p", admin, nil, nil)
	if err := ts.Repo().FinishDeleteVM(ctx, "p", "web"); err != nil {
		t.Fatal(err)
	}
	ts.mustCall(404, "GET", "/api/v1/vms/web?project=p", viewer, nil, nil)
	if _, err := ts.st.Get(ctx, store.ExplanationKey("p", "web")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("explanation after the VM's delete: %v", err)
	}
	ts.mustCall(201, "POST", "/api/v1/vms?project=p", admin, vmReq("web"), nil)
	got = model.VM{}
	ts.mustCall(200, "GET", "/api/v1/vms/web?project=p", viewer, nil, &got)
	if got.Status.Explanation != nil {
		t.Fatalf("a new VM of the same name shows %+v", got.Status.Explanation)
	}
}

// BenchmarkGetPlacedVM is GET vm of a placed VM on an embedded etcd: its
// explanation apart (one more read, of its key) and, as before, inside
// the record; p50 and p99 of one client's calls.
func BenchmarkGetPlacedVM(b *testing.B) {
	ts := startServer(b, startEtcd(b, true))
	ctx := context.Background()
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/vms?project=default", admin, vmReq("apart"), nil)
	ts.mustCall(201, "POST", "/api/v1/vms?project=default", admin, vmReq("inside"), nil)
	placeWithExplanation(b, ts, "default", "apart", "h1", "placed on h1")
	placeWithExplanation(b, ts, "default", "inside", "h1", "placed on h1")
	ex, err := ts.Repo().GetExplanation(ctx, mustVM(b, ts, "inside"))
	if err != nil || ex == nil {
		b.Fatalf("explanation %+v, %v", ex, err)
	}
	if _, err := ts.Repo().UpdateVM(ctx, "default", "inside", func(v *model.VM) error { v.Status.Explanation = ex; return nil }); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"apart", "inside"} {
		b.Run(name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				var got model.VM
				t0 := time.Now()
				ts.mustCall(200, "GET", "/api/v1/vms/"+name+"?project=default", admin, nil, &got)
				lat = append(lat, time.Since(t0))
				if got.Status.Explanation == nil {
					b.Fatal("no explanation")
				}
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
		})
	}
}

func mustVM(tb testing.TB, ts *testServer, name string) *model.VM {
	tb.Helper()
	vm, err := ts.Repo().GetVM(context.Background(), "default", name)
	if err != nil {
		tb.Fatal(err)
	}
	return vm
}
