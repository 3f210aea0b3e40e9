package scheduler

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vpool/vpool/internal/model"
)

func TestExplanationDoesNotFit(t *testing.T) {
	hosts := []model.Host{
		MakeHost().Name("a").Memory(64).Obj(),
		MakeHost().Name("b").Memory(64).Obj(),
		MakeHost().Name("c").State(model.HostDown).Obj(),
		MakeHost().Name("d").Cordon().Obj(),
		MakeHost().Name("e").Memory(64).CPUs(2).Obj(),
	}
	snap := newSnap(t, hosts,
		MakeAlloc("a").Used(0, 58, 0).Obj(),
		MakeAlloc("b").Used(0, 60, 0).Obj(),
		MakeAlloc("e").Used(6, 0, 0).Obj())
	d := newSched(t).Place(snap, MakeVM("p/vm").CPUs(4).Memory(8).Req())
	if d.Placed() || d.Err != nil {
		t.Fatalf("placed on %q (err %v), want does not fit", d.Host, d.Err)
	}
	want := []model.FilterOut{
		{Filter: "hoststate", Rejected: 1, Reason: "down"},
		{Filter: "hoststate", Rejected: 1, Reason: "cordoned"},
		{Filter: "fit", Rejected: 2, Reason: "insufficient memory (needs 8GiB, most free 6GiB)"},
		{Filter: "fit", Rejected: 1, Reason: "insufficient CPU (needs 4 vCPUs, most free 2 vCPUs)"},
	}
	if diff := cmp.Diff(want, d.Explanation.Filters); diff != "" {
		t.Errorf("filters (-want +got):\n%s", diff)
	}
	wantSum := "does not fit: 2 hosts: insufficient memory (needs 8GiB, most free 6GiB); 1 host: down; 1 host: cordoned; and 1 more reasons"
	if d.Explanation.Summary != wantSum {
		t.Errorf("summary\n got %q\nwant %q", d.Explanation.Summary, wantSum)
	}
	if d.Explanation.Hosts != 5 || d.Explanation.Chosen != "" || len(d.Explanation.Candidates) != 0 {
		t.Errorf("explanation %+v", d.Explanation)
	}
}

func TestExplanationPlaced(t *testing.T) {
	var hosts []model.Host
	for i := range 5 {
		hosts = append(hosts, MakeHost().Name(fmt.Sprintf("h%d", i)).Obj())
	}
	snap := newSnap(t, hosts, MakeAlloc("h3").Used(8, 40, 0).VMs("p/x").Obj(), MakeAlloc("h1").Used(2, 10, 0).VMs("p/y").Obj())
	d := newSched(t).Place(snap, MakeVM("p/vm").CPUs(2).Memory(4).Req())
	if d.Host != "h3" {
		t.Fatalf("binpack chose %q, want h3 (most allocated); %s", d.Host, d.Explanation.Summary)
	}
	e := d.Explanation
	if e.Chosen != "h3" || len(e.Candidates) != 3 || e.Candidates[0].Host != "h3" || e.Candidates[1].Host != "h1" {
		t.Fatalf("candidates %+v", e.Candidates)
	}
	for _, part := range []string{"binpack", "balance", "energy", "labels", "affinity"} {
		if _, ok := e.Candidates[0].Parts[part]; !ok {
			t.Errorf("candidate has no %q part: %v", part, e.Candidates[0].Parts)
		}
	}
	if !strings.HasPrefix(e.Summary, "placed on h3 (score ") || !strings.HasSuffix(e.Summary, "of 5 hosts") {
		t.Errorf("summary %q", e.Summary)
	}
	if snap.hosts[3].memUsed != 40*GiB {
		t.Error("Place changed the snapshot")
	}
}

func TestStrategies(t *testing.T) {
	hosts := []model.Host{MakeHost().Name("busy").Obj(), MakeHost().Name("idle").Obj()}
	alloc := MakeAlloc("busy").Used(8, 32, 0).VMs("p/x").Obj()
	for _, tc := range []struct{ strategy, want string }{{"binpack", "busy"}, {"spread", "idle"}} {
		pol := model.DefaultPolicy()
		pol.Strategy = tc.strategy
		s, err := New(pol)
		if err != nil {
			t.Fatal(err)
		}
		snap, _ := NewSnapshot(pol, hosts, []model.Allocation{alloc})
		if d := s.Place(snap, MakeVM("p/a").Memory(4).Req()); d.Host != tc.want {
			t.Errorf("%s chose %q, want %q", tc.strategy, d.Host, tc.want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(model.DefaultPolicy(), WithPlugins("fit", "nope")); !errors.Is(err, ErrUnknownPlugin) {
		t.Errorf("unknown plugin: %v", err)
	}
	bad := model.DefaultPolicy()
	bad.Ratios.Memory = 4
	if _, err := New(bad); !errors.Is(err, ErrBadPolicy) {
		t.Errorf("bad policy: %v", err)
	}
	if _, err := NewSnapshot(bad, []model.Host{MakeHost().Obj(), MakeHost().Obj()}, nil); !errors.Is(err, ErrDuplicateHost) {
		t.Errorf("duplicate host: %v", err)
	}
	pol := model.DefaultPolicy()
	pol.Weights = map[string]float64{"energy": 0}
	s, err := New(pol, WithPlugins("labels"))
	if err != nil {
		t.Fatal(err)
	}
	f, sc := s.Plugins()
	if diff := cmp.Diff([]string{"fit", "hoststate", "labels"}, f); diff != "" {
		t.Errorf("filters: %s", diff)
	}
	if diff := cmp.Diff([]string{"labels"}, sc); diff != "" {
		t.Errorf("scorers: %s", diff)
	}
	if d := s.Place(newSnap(t, []model.Host{MakeHost().Obj()}), Request{Key: "p/a"}); !errors.Is(d.Err, ErrBadRequest) {
		t.Errorf("nil spec: %v", d.Err)
	}
}

func TestNarrowWalks(t *testing.T) {
	var hosts []model.Host
	for i := range 100 {
		b := MakeHost().Name(fmt.Sprintf("h%02d", i))
		if i == 40 || i == 41 {
			b.Label("gpu", "a100")
		}
		if i == 7 {
			b.State(model.HostDown)
		}
		hosts = append(hosts, b.Obj())
	}
	snap := newSnap(t, hosts,
		MakeAlloc("h07").VMs("p/x").Group("p/db", 1).Obj(),
		MakeAlloc("h30").VMs("p/y").Group("p/web", 1).Obj())
	s := newSched(t)
	cases := []struct {
		name string
		req  Request
		want string
		out  model.FilterOut
	}{
		{"pinned", MakeVM("p/a").Pin("h55").Req(), "h55", model.FilterOut{Filter: "pin", Rejected: 98, Reason: `not the requested host "h55"`}},
		{"pinned down", MakeVM("p/a").Pin("h07").Req(), "", model.FilterOut{Filter: "pin", Rejected: 99, Reason: `not the requested host "h07"`}},
		{"rare label", MakeVM("p/a").Require("gpu", "a100").Req(), "h4", model.FilterOut{Filter: "labels", Rejected: 97, Reason: "missing required labels gpu=a100"}},
		{"hard affinity joins group", MakeVM("p/a").Group("web", model.AffinityHard).Req(), "h30",
			model.FilterOut{Filter: "affinity", Rejected: 98, Reason: `affinity group "p/web" runs on other hosts`}},
		{"group only on a down host restarts anywhere", MakeVM("p/a").Group("db", model.AffinityHard).Req(), "h", model.FilterOut{Filter: "hoststate", Rejected: 1, Reason: "down"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := s.Place(snap, tc.req)
			if !strings.HasPrefix(d.Host, tc.want) || (tc.want == "" && d.Host != "") {
				t.Errorf("host %q, want prefix %q: %s", d.Host, tc.want, d.Explanation.Summary)
			}
			found := false
			for _, f := range d.Explanation.Filters {
				found = found || f == tc.out
			}
			if !found {
				t.Errorf("no %+v in %+v", tc.out, d.Explanation.Filters)
			}
		})
	}
}

func TestBatchAllOrNothing(t *testing.T) {
	hosts := []model.Host{MakeHost().Name("a").Obj(), MakeHost().Name("b").Obj()}
	s := newSched(t)
	anti := func(n int) []Request {
		var rs []Request
		for i := range n {
			rs = append(rs, MakeVM(fmt.Sprintf("p/w%d", i)).Memory(2).Group("web", model.AntiAffinityHard).Req())
		}
		return rs
	}
	t.Run("three members on two hosts: none", func(t *testing.T) {
		snap := newSnap(t, hosts)
		before := snap.Clone()
		reqs := append([]Request{MakeVM("p/solo").Memory(1).Req()}, anti(3)...)
		ds := s.PlaceBatch(snap, reqs)
		if !ds[0].Placed() {
			t.Fatalf("solo: %s", ds[0].Explanation.Summary)
		}
		for _, d := range ds[1:] {
			if d.Placed() || !strings.HasPrefix(d.Explanation.Summary, "group p/web placed all or nothing: ") {
				t.Errorf("%s: host %q, summary %q", d.Key, d.Host, d.Explanation.Summary)
			}
		}
		if err := snap.Forget("p/solo"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before.hosts, snap.hosts, cmp.AllowUnexported(hostRec{})); diff != "" {
			t.Errorf("snapshot changed (-before +after):\n%s", diff)
		}
	})
	t.Run("two members on two hosts: both, apart", func(t *testing.T) {
		ds := s.PlaceBatch(newSnap(t, hosts), anti(2))
		if !ds[0].Placed() || !ds[1].Placed() || ds[0].Host == ds[1].Host {
			t.Errorf("got %q and %q", ds[0].Host, ds[1].Host)
		}
	})
	t.Run("hard affinity gang sizes its host", func(t *testing.T) {
		snap := newSnap(t, []model.Host{MakeHost().Name("tight").Memory(64).Obj(), MakeHost().Name("roomy").Memory(64).Obj()},
			MakeAlloc("tight").Used(1, 54, 0).VMs("p/x").Obj())
		var rs []Request
		for i := range 3 {
			rs = append(rs, MakeVM(fmt.Sprintf("p/g%d", i)).Memory(4).Group("db", model.AffinityHard).Req())
		}
		for _, d := range s.PlaceBatch(snap, rs) {
			if d.Host != "roomy" {
				t.Errorf("%s on %q: %s", d.Key, d.Host, d.Explanation.Summary)
			}
		}
	})
}

func TestAssumeForgetClone(t *testing.T) {
	hosts := []model.Host{MakeHost().Name("a").Pool("fast", "ssd", 100).Obj(), MakeHost().Name("b").Obj()}
	snap := newSnap(t, hosts)
	before := snap.Clone()
	s := newSched(t)
	d := s.Place(snap, MakeVM("p/a").CPUs(2).Memory(8).Disk(40, "fast", "").Domain("pci").Group("g", model.AntiAffinityHard).Reserve(500, 2).Req())
	if d.Host != "a" {
		t.Fatalf("host %q: %s", d.Host, d.Explanation.Summary)
	}
	if err := snap.Assume(d); err != nil {
		t.Fatal(err)
	}
	if err := snap.Assume(d); !errors.Is(err, ErrAlreadyAssumed) {
		t.Errorf("second assume: %v", err)
	}
	if before.hosts[0].memUsed != 0 || snap.hosts[0].memUsed != 8*GiB || snap.pools[0][0].free != 60*GiB || snap.hosts[0].dom != snap.domIDs["pci"] {
		t.Errorf("assume did not charge, or the clone shared state")
	}
	var a model.Allocation
	d.Apply(&a)
	want := model.Allocation{
		Used: model.Resources{CPUs: 2, Memory: 8 * model.GiB, Disk: 40 * model.GiB}, Reserved: model.Resources{CPUs: 1, Memory: 2 * model.GiB},
		ReservedCPUMilli: 500, VMs: map[string]bool{"p/a": true}, Domains: map[string]int{"pci": 1}, Groups: map[string]int{"p/g": 1},
	}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Errorf("Apply (-want +got):\n%s", diff)
	}
	// A snapshot rebuilt from the applied allocation equals the assumed one.
	a.Host = "a"
	rebuilt := newSnap(t, hosts, a)
	if diff := cmp.Diff(rebuilt.hosts[0], snap.hosts[0], cmp.AllowUnexported(hostRec{})); diff != "" {
		t.Errorf("rebuilt differs:\n%s", diff)
	}
	if err := snap.Forget("p/a"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before.hosts, snap.hosts, cmp.AllowUnexported(hostRec{})); diff != "" {
		t.Errorf("forget did not restore:\n%s", diff)
	}
	if snap.pools[0][0].free != 100*GiB || len(snap.groupHosts[snap.groupIDs["p/g"]]) != 0 {
		t.Errorf("forget left pool or group state")
	}
	if err := snap.Forget("p/a"); !errors.Is(err, ErrNotAssumed) {
		t.Errorf("second forget: %v", err)
	}
	ApplyVM(&a, "p/a", d.Spec, -1)
	if a.Used != (model.Resources{}) || len(a.VMs) != 0 || len(a.Domains) != 0 || len(a.Groups) != 0 || a.ReservedCPUMilli != 0 {
		t.Errorf("release left %+v", a)
	}
}

func TestCheckAndSetAllocation(t *testing.T) {
	s := newSched(t)
	h := MakeHost().Name("h").Memory(64).Obj()
	req := MakeVM("p/a").Memory(8).Req()
	if d := s.Check(h, MakeAlloc("h").Used(0, 50, 0).Obj(), req); d.Host != "h" {
		t.Errorf("check with room: %q %s", d.Host, d.Explanation.Summary)
	}
	d := s.Check(h, MakeAlloc("").Used(0, 60, 0).Obj(), req)
	if d.Placed() || d.Explanation.Filters[0].Reason != "insufficient memory (needs 8GiB, most free 4GiB)" {
		t.Errorf("check when full: %q %+v", d.Host, d.Explanation.Filters)
	}
	snap := newSnap(t, []model.Host{h})
	if err := snap.SetAllocation(MakeAlloc("h").Used(0, 60, 0).Obj()); err != nil {
		t.Fatal(err)
	}
	if d := s.Place(snap, req); d.Placed() {
		t.Errorf("placed on a host filled by SetAllocation")
	}
	if err := snap.SetAllocation(MakeAlloc("zz").Obj()); !errors.Is(err, ErrUnknownHost) {
		t.Errorf("unknown host: %v", err)
	}
	h.State = model.HostMaintenance
	snap.SetHost(h)
	snap.SetHost(MakeHost().Name("new").Obj())
	if d := s.Place(snap, MakeVM("p/b").Memory(1).Req()); d.Host != "new" {
		t.Errorf("after SetHost: %q %s", d.Host, d.Explanation.Summary)
	}
}

// A placed VM's explanation counts the hosts the index skipped as too
// full under one fit reason, without visiting them.
func TestExplanationSkippedHosts(t *testing.T) {
	var hosts []model.Host
	var allocs []model.Allocation
	for i := range 10 {
		hosts = append(hosts, MakeHost().Name(fmt.Sprintf("h%d", i)).CPUs(16).Memory(64).Obj())
		if i < 8 {
			allocs = append(allocs, MakeAlloc(fmt.Sprintf("h%d", i)).Used(4, 62, 0).VMs("p/x").Obj())
		}
	}
	d := newSched(t).Place(newSnap(t, hosts, allocs...), MakeVM("p/a").CPUs(8).Memory(8).Req())
	want := []model.FilterOut{{Filter: "fit", Rejected: 8, Reason: "insufficient memory or CPU (needs 8GiB and 8 vCPUs)"}}
	if diff := cmp.Diff(want, d.Explanation.Filters); diff != "" || !d.Placed() {
		t.Errorf("placed %v, filters (-want +got):\n%s", d.Placed(), diff)
	}
	if !strings.HasSuffix(d.Explanation.Summary, ": 2 feasible, 8 rejected, 0 not examined of 10 hosts") {
		t.Errorf("summary %q", d.Explanation.Summary)
	}
}
