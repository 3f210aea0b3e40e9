package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

func (e *env) markDeleted(name string) {
	e.t.Helper()
	_, err := e.repo.UpdateVM(context.Background(), "p", name, func(vm *model.VM) error {
		now := e.clock.Now()
		vm.DeletedAt = &now
		if vm.Status.Host != "" {
			vm.Status.Phase = model.PhaseDeleting
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) gone(name string) bool {
	_, err := e.repo.GetVM(context.Background(), "p", name)
	return errors.Is(err, store.ErrNotFound)
}

func TestCleanupFinishesDeletions(t *testing.T) {
	e := newEnv(t)
	e.addHost("alive", 4, 4*model.GiB, nil)
	e.addHost("dying", 4, 4*model.GiB, map[string]string{"zone": "b"})
	e.createVM("on-live", 1, 1*model.GiB)
	vm := &model.VM{Meta: model.Meta{Name: "on-dying", Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB,
		Placement: model.Placement{RequiredLabels: map[string]string{"zone": "b"}}}}
	if _, err := e.repo.CreateVM(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	cfg := e.config("a", nil)
	cfg.LeaseTTL = time.Hour
	cfg.DeleteGrace = 10 * time.Minute
	e.start(cfg)
	eventually(t, "both placed", func() bool { return e.vm("on-live").Status.Host == "alive" && e.vm("on-dying").Status.Host == "dying" })

	// "dying" stops renewing while "alive" renews: dying is fenced, and
	// on-dying (it needs zone b) stays failed with the reason.
	e.stepBeating(model.DefaultHAPolicy().Fence()+model.DefaultHAPolicy().Margin()+time.Second, "alive")
	eventually(t, "dying fenced", func() bool { return e.host("dying").State == model.HostFenced })
	eventually(t, "on-dying failed with a reason", func() bool {
		v := e.vm("on-dying")
		return v.Status.Phase == model.PhaseFailed && strings.Contains(v.Status.HAReason, "no host fits")
	})

	e.markDeleted("on-live")
	e.markDeleted("on-dying")
	e.createVM("never-placed", 64, 64*model.GiB) // fits nowhere
	eventually(t, "never-placed explained", func() bool { return e.vm("never-placed").Status.Explanation != nil })
	e.markDeleted("never-placed")

	eventually(t, "unplaced VM deleted", func() bool { return e.gone("never-placed") })
	// A fenced host runs nothing: no grace period to wait for.
	eventually(t, "VM on a fenced host deleted", func() bool { return e.gone("on-dying") })
	if e.gone("on-live") {
		t.Error("VM on a live host deleted by the controller; its agent finishes it")
	}
	e.checkAllocations()
	u, _, err := e.repo.GetUsage(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	if u.VMs != 1 {
		t.Errorf("usage counts %d VMs, want 1", u.VMs)
	}
}

func TestEventCompaction(t *testing.T) {
	tests := []struct {
		name      string
		maxEvents int
		maxAge    time.Duration
		old, new  int // events written 2 h ago, and now
		want      int
	}{
		{"count bound", 20, 24 * time.Hour, 0, 50, 20},
		{"age bound", 1000, time.Hour, 30, 10, 10},
		{"both", 5, time.Hour, 30, 10, 5},
		{"nothing to do", 1000, 24 * time.Hour, 3, 3, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.clearEvents()
			write := func(n int, at time.Time) {
				for i := range n {
					err := e.repo.AppendEvent(context.Background(), model.Event{Time: at.Add(time.Duration(i)), Kind: "test", Object: "x", Message: fmt.Sprint(i)})
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			write(tt.old, e.clock.Now().Add(-2*time.Hour))
			write(tt.new, e.clock.Now())
			cfg := e.config("a", nil)
			cfg.MaxEvents, cfg.MaxEventAge = tt.maxEvents, tt.maxAge
			m := New(cfg)
			r := newReconciler(m, m.newTerm(), newCache(m.log))
			if err := r.compactEvents(context.Background()); err != nil {
				t.Fatal(err)
			}
			evs := e.events("")
			if len(evs) != tt.want {
				t.Fatalf("%d events left, want %d", len(evs), tt.want)
			}
			// the newest survive
			if tt.new > 0 && evs[len(evs)-1].Message != fmt.Sprint(tt.new-1) {
				t.Errorf("newest event lost: last is %q", evs[len(evs)-1].Message)
			}
		})
	}
}

func TestCompactionIsFencedByLeadership(t *testing.T) {
	e := newEnv(t)
	e.clearEvents()
	for i := range 10 {
		if err := e.repo.AppendEvent(context.Background(), model.Event{Kind: "test", Time: e.clock.Now().Add(time.Duration(i))}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := e.config("a", nil)
	cfg.MaxEvents = 1
	m := New(cfg)
	// a term whose leader key is long gone: its writes must not land
	r := newReconciler(m, m.newTerm(store.IfRev(store.LeaderKey, 12345)), newCache(m.log))
	if err := r.compactEvents(context.Background()); !errors.Is(err, state.ErrNotLeader) {
		t.Fatalf("err = %v, want ErrNotLeader", err)
	}
	if n := len(e.events("")); n != 10 {
		t.Errorf("a deposed leader compacted events: %d left, want 10", n)
	}
}

// clearEvents deletes the events written while setting up.
func (e *env) clearEvents() {
	e.t.Helper()
	kvs, _, err := e.st.List(context.Background(), store.EventsPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, kv := range kvs {
		if _, _, err := e.st.Txn(context.Background(), nil, []store.Op{store.Delete(kv.Key)}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestMigrationPruning(t *testing.T) {
	e := newEnv(t)
	e.addHost("h0", 4, 4*model.GiB, nil)
	e.addHost("h1", 4, 4*model.GiB, nil)
	now := e.clock.Now()
	put := func(id string, phase model.MigrationPhase, finishedAgo time.Duration, cleaned bool) {
		m := model.Migration{Meta: model.Meta{Name: id, Project: "default"}, VM: "v", Source: "h0", Target: "h1", Phase: phase}
		if phase.Final() {
			at := now.Add(-finishedAgo)
			m.FinishedAt = &at
			m.SourceCleaned, m.TargetCleaned = cleaned, cleaned
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.st.Txn(context.Background(), nil, []store.Op{store.Put(store.MigrationKey(id), b)}); err != nil {
			t.Fatal(err)
		}
	}
	put("old-done", model.MigrationCompleted, 10*24*time.Hour, true)
	put("old-failed-unclean", model.MigrationFailed, 10*24*time.Hour, false) // the target still needs it
	put("running", model.MigrationTransferring, 0, false)
	for i := range 4 {
		put(fmt.Sprintf("recent-%d", i), model.MigrationCancelled, time.Duration(4-i)*time.Hour, true)
	}
	cfg := e.config("a", nil)
	cfg.MaxMigrations = 3
	m := New(cfg)
	r := newReconciler(m, m.newTerm(), newCache(m.log))
	if err := r.compactEvents(context.Background()); err != nil {
		t.Fatal(err)
	}
	migs, _, err := e.repo.ListMigrations(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, mg := range migs {
		left = append(left, mg.Name)
	}
	sort.Strings(left)
	want := []string{"old-failed-unclean", "recent-1", "recent-2", "recent-3", "running"}
	if !slices.Equal(left, want) {
		t.Fatalf("migrations left %v, want %v", left, want)
	}
}
