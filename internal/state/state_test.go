package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

func newRepo(t *testing.T) *Repo {
	t.Helper()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	return New(st, nil)
}

func mkVM(project, name string, vcpus int, mem model.Bytes) *model.VM {
	return &model.VM{Meta: model.Meta{Name: name, Project: project},
		Spec: model.VMSpec{VCPUs: vcpus, Memory: mem, Power: model.PowerRunning, Disks: []model.Disk{{Name: "disk0", Size: model.GiB}}}}
}

func mustProject(t *testing.T, r *Repo, name string, q model.Quota) {
	t.Helper()
	if _, err := r.CreateProject(context.Background(), &model.Project{Meta: model.Meta{Name: name}, Quota: q}); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentCreatesRespectQuota(t *testing.T) {
	r := newRepo(t)
	runQuotaRace(t, r)
}

// runQuotaRace fires 50 concurrent creates against a quota of 10 VMs.
func runQuotaRace(t *testing.T, r *Repo) {
	ctx := context.Background()
	mustProject(t, r, "race", model.Quota{VMs: 10})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.CreateVM(ctx, mkVM("race", fmt.Sprintf("vm%d", i), 1, 64*model.MiB))
			mu.Lock()
			defer mu.Unlock()
			var fe *model.FieldError
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrQuotaExceeded) && errors.As(err, &fe) && fe.Field == "quota.vms":
				refused++
			default:
				t.Errorf("create %d: unexpected error %v", i, err)
			}
		}()
	}
	wg.Wait()
	if ok != 10 || refused != 40 {
		t.Fatalf("accepted %d, refused %d; want 10 and 40", ok, refused)
	}
	vms, _, err := r.ListVMs(ctx, "race")
	if err != nil || len(vms) != 10 {
		t.Fatalf("stored %d VMs (%v), want 10", len(vms), err)
	}
	u, _, _ := r.GetUsage(ctx, "race")
	if u.VMs != 10 || u.VCPUs != 10 || u.Memory != 640*model.MiB {
		t.Fatalf("usage %+v", u)
	}
}

func TestCreateVMsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		quota   model.Quota
		batch   []string
		wantErr error
	}{
		{"over quota", model.Quota{VMs: 3}, []string{"a", "b", "c", "d"}, ErrQuotaExceeded},
		{"name taken", model.Quota{}, []string{"x", "taken"}, ErrExists},
		{"twice in batch", model.Quota{}, []string{"y", "y"}, ErrExists},
		{"fits", model.Quota{VMs: 3}, []string{"a", "b"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRepo(t)
			mustProject(t, r, "p", tt.quota)
			if _, err := r.CreateVM(ctx, mkVM("p", "taken", 1, 64*model.MiB)); err != nil {
				t.Fatal(err)
			}
			var vms []*model.VM
			for _, n := range tt.batch {
				vms = append(vms, mkVM("p", n, 1, 64*model.MiB))
			}
			_, err := r.CreateVMs(ctx, "p", vms)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			stored, _, _ := r.ListVMs(ctx, "p")
			u, _, _ := r.GetUsage(ctx, "p")
			want := 1
			if err == nil {
				want += len(tt.batch)
			}
			if len(stored) != want || u.VMs != want {
				t.Fatalf("stored %d VMs, usage %d; want %d", len(stored), u.VMs, want)
			}
		})
	}
}

func TestCreateVMMissingProject(t *testing.T) {
	r := newRepo(t)
	if _, err := r.CreateVM(context.Background(), mkVM("nope", "a", 1, 64*model.MiB)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v", err)
	}
}

func TestVMLifecycleKeepsUsageAndAllocation(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{VCPUs: 4})
	vm, err := r.CreateVM(ctx, mkVM("p", "web", 2, 512*model.MiB))
	if err != nil {
		t.Fatal(err)
	}
	if vm.Status.Phase != model.PhasePending || vm.Revision == 0 || vm.UID == "" {
		t.Fatalf("created %+v", vm)
	}
	// a fit function that refuses leaves everything unchanged
	errFull := errors.New("full")
	if _, err := r.UpdateVMFit(ctx, "p", "web", assign("h1"), func(*model.VM, *model.Allocation) error { return errFull }); !errors.Is(err, errFull) {
		t.Fatalf("fit refusal: %v", err)
	}
	vm, err = r.UpdateVMFit(ctx, "p", "web", assign("h1"), func(v *model.VM, a *model.Allocation) error {
		if a.Host != "h1" || len(a.VMs) != 0 {
			return fmt.Errorf("fit saw %+v", a)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := r.GetAllocation(ctx, "h1")
	if !a.VMs["p/web"] || a.Used.CPUs != 2 || a.Used.Memory != 512*model.MiB {
		t.Fatalf("allocation after placement %+v", a)
	}
	// resize within quota moves usage and allocation
	if _, err := r.UpdateVM(ctx, "p", "web", func(v *model.VM) error { v.Spec.VCPUs = 4; return nil }); err != nil {
		t.Fatal(err)
	}
	a, _ = r.GetAllocation(ctx, "h1")
	u, _, _ := r.GetUsage(ctx, "p")
	if a.Used.CPUs != 4 || u.VCPUs != 4 {
		t.Fatalf("after resize alloc %+v usage %+v", a.Used, u)
	}
	// resize over quota is refused
	if _, err := r.UpdateVM(ctx, "p", "web", func(v *model.VM) error { v.Spec.VCPUs = 5; return nil }); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("over-quota resize: %v", err)
	}
	// move to another host
	if _, err := r.UpdateVM(ctx, "p", "web", func(v *model.VM) error { v.Status.Host = "h2"; return nil }); err != nil {
		t.Fatal(err)
	}
	a1, _ := r.GetAllocation(ctx, "h1")
	a2, _ := r.GetAllocation(ctx, "h2")
	if len(a1.VMs) != 0 || a1.Used != (model.Resources{}) || !a2.VMs["p/web"] || a2.Used.CPUs != 4 {
		t.Fatalf("after move h1 %+v h2 %+v", a1, a2)
	}
	// ErrSkip writes nothing
	before, _ := r.GetVM(ctx, "p", "web")
	got, err := r.UpdateVM(ctx, "p", "web", func(v *model.VM) error { v.Spec.VCPUs = 1; return ErrSkip })
	if err != nil || got.Revision != before.Revision || got.Spec.VCPUs != 4 {
		t.Fatalf("skip: %v %+v", err, got)
	}
	if err := r.FinishDeleteVM(ctx, "p", "web"); err != nil {
		t.Fatal(err)
	}
	if err := r.FinishDeleteVM(ctx, "p", "web"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	a2, _ = r.GetAllocation(ctx, "h2")
	u, _, _ = r.GetUsage(ctx, "p")
	if len(a2.VMs) != 0 || u != (model.Usage{}) {
		t.Fatalf("after delete alloc %+v usage %+v", a2, u)
	}
	if _, err := r.GetVM(ctx, "p", "web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("vm still there: %v", err)
	}
	evs, _, _ := r.ListEvents(ctx, 0, "p")
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind+":"+e.To)
	}
	want := []string{"project.created:", "vm.created:pending", "vm.phase:creating", "vm.resize:", "vm.deleted:"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

func assign(host string) func(*model.VM) error {
	return func(v *model.VM) error {
		v.Status.Host, v.Status.Phase = host, model.PhaseCreating
		return nil
	}
}

func TestConcurrentPlacementsHonourFit(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{})
	for i := range 8 {
		if _, err := r.CreateVM(ctx, mkVM("p", fmt.Sprintf("v%d", i), 1, 64*model.MiB)); err != nil {
			t.Fatal(err)
		}
	}
	fit := func(v *model.VM, a *model.Allocation) error {
		if a.Used.CPUs+v.Spec.VCPUs > 3 {
			return errors.New("no room")
		}
		return nil
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = r.UpdateVMFit(ctx, "p", fmt.Sprintf("v%d", i), assign("h"), fit)
		}()
	}
	wg.Wait()
	a, _ := r.GetAllocation(ctx, "h")
	if len(a.VMs) != 3 || a.Used.CPUs != 3 {
		t.Fatalf("allocation %+v; want exactly 3 VMs", a)
	}
}

func TestListVMsRawMatchesDecoded(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{})
	for i := range 3 {
		if _, err := r.CreateVM(ctx, mkVM("p", fmt.Sprintf("v%d", i), 1, 64*model.MiB)); err != nil {
			t.Fatal(err)
		}
	}
	vms, _, _ := r.ListVMs(ctx, "")
	raw, _, err := r.ListVMsRaw(ctx, "p")
	if err != nil || len(raw) != 3 {
		t.Fatal(err, len(raw))
	}
	for i, b := range raw {
		var v model.VM
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(*vms[i], v); diff != "" || v.Revision == 0 {
			t.Fatalf("raw %d differs:\n%s", i, diff)
		}
	}
}

func TestWithRevisionReplacesAStaleOne(t *testing.T) {
	vm := mkVM("p", "x", 1, 64*model.MiB)
	vm.Revision = 3
	var got model.VM
	if err := json.Unmarshal(withRevision(encode(vm), 9), &got); err != nil || got.Revision != 9 {
		t.Fatalf("revision %d (%v), want 9", got.Revision, err)
	}
	if err := json.Unmarshal(withRevision(encodeVM(vm), 9), &got); err != nil || got.Revision != 9 || got.Name != "x" {
		t.Fatalf("revision %d (%v), want 9", got.Revision, err)
	}
}

func TestEventsListAndFollow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := newRepo(t)
	mustProject(t, r, "a", model.Quota{})
	mustProject(t, r, "b", model.Quota{})
	_, _ = r.CreateVM(ctx, mkVM("a", "x", 1, 64*model.MiB))
	all, rev, _ := r.ListEvents(ctx, 0, "")
	onlyA, _, _ := r.ListEvents(ctx, 0, "a")
	if len(all) != 3 || len(onlyA) != 2 {
		t.Fatalf("all %d, a %d", len(all), len(onlyA))
	}
	if later, _, _ := r.ListEvents(ctx, all[1].ID, ""); len(later) != 1 {
		t.Fatalf("since filter: %d", len(later))
	}
	got := make(chan model.Event, 10)
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- r.FollowEvents(fctx, rev, "b", func(e model.Event) error { got <- e; return nil })
	}()
	_, _ = r.CreateVM(ctx, mkVM("a", "y", 1, 64*model.MiB))
	_, _ = r.CreateVM(ctx, mkVM("b", "z", 1, 64*model.MiB))
	select {
	case e := <-got:
		if e.Object != "vm/b/z" || e.ID <= rev {
			t.Fatalf("followed %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("no event followed")
	}
	fcancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}

func TestProjectDeleteRefusesNonEmpty(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{})
	if _, err := r.CreateProject(ctx, &model.Project{Meta: model.Meta{Name: "p"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate project: %v", err)
	}
	_, _ = r.CreateVM(ctx, mkVM("p", "x", 1, 64*model.MiB))
	if err := r.DeleteProject(ctx, "p"); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("got %v", err)
	}
	_ = r.FinishDeleteVM(ctx, "p", "x")
	if err := r.DeleteProject(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetProject(ctx, "p"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("project still there: %v", err)
	}
}

func TestHostTransitionsWriteEvents(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	set := func(s model.HostState) func(*model.Host, bool) error {
		return func(h *model.Host, _ bool) error { h.State = s; return nil }
	}
	for _, s := range []model.HostState{model.HostReady, model.HostReady, model.HostDown, model.HostReady, model.HostMaintenance} {
		if _, err := r.UpsertHost(ctx, "h1", set(s)); err != nil {
			t.Fatal(err)
		}
	}
	evs, _, _ := r.ListEvents(ctx, 0, "")
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	want := []string{"host.joined", "host.down", "host.up", "host.maintenance"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}
	if _, err := r.UpdateHost(ctx, "nope", func(*model.Host) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing host: %v", err)
	}
	_, _ = r.UpdateAllocation(ctx, "h1", func(a *model.Allocation) error { a.VMs["p/x"] = true; return nil })
	if err := r.DeleteHost(ctx, "h1"); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("delete busy host: %v", err)
	}
}

func TestTokensAndPolicy(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	tok := &model.Token{Hash: HashSecret("s3cret"), Role: model.RoleMember, Project: "p"}
	if err := r.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	got, err := r.TokenByHash(ctx, HashSecret("s3cret"))
	if err != nil || got.ID != tok.ID || got.Project != "p" {
		t.Fatalf("%v %+v", err, got)
	}
	if _, err := r.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.TokenByHash(ctx, tok.Hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token survived: %v", err)
	}
	p, rev, _ := r.GetPolicy(ctx)
	if rev != 0 || p.Strategy != "binpack" {
		t.Fatalf("default policy %+v %d", p, rev)
	}
	p.Strategy = "spread"
	if _, err := r.PutPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p2, _, _ := r.GetPolicy(ctx); p2.Strategy != "spread" {
		t.Fatalf("policy %+v", p2)
	}
}

func TestPruneEvents(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	defer st.Close()
	now := time.Unix(1000, 0)
	r := New(st, func() time.Time { return now })
	for i := range 5 {
		now = time.Unix(1000+int64(i), 0)
		_ = r.AppendEvent(ctx, model.Event{Kind: "x"})
	}
	n, err := r.PruneEvents(ctx, time.Unix(1003, 0), 0)
	if err != nil || n != 3 {
		t.Fatalf("pruned %d (%v), want 3", n, err)
	}
	kvs, _, _ := st.List(ctx, store.EventsPrefix)
	if len(kvs) != 2 {
		t.Fatalf("%d left", len(kvs))
	}
}
