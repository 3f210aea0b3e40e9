package controller

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// beat is a heartbeat: it renews the lease of the host's alive key.
func (e *env) beat(host string) {
	e.t.Helper()
	kv, err := e.st.Get(context.Background(), store.AliveKey(host))
	if err != nil {
		e.t.Fatalf("beat %s: %v", host, err)
	}
	if err := e.st.KeepAlive(context.Background(), kv.Lease); err != nil {
		e.t.Fatalf("beat %s: %v", host, err)
	}
}

// stepBeating steps the fake clock by d in small steps, the hosts named
// beating at each (the others' leases expire), and waits for a few HA
// passes after each step.
func (e *env) stepBeating(d time.Duration, hosts ...string) {
	e.t.Helper()
	for done := time.Duration(0); done < d; done += 500 * time.Millisecond {
		e.clock.Step(500 * time.Millisecond)
		for _, h := range hosts {
			e.beat(h)
		}
		e.st.ExpireLeases()
		time.Sleep(30 * time.Millisecond)
	}
}

func hostKinds(e *env, host string) []string {
	var out []string
	for _, ev := range e.events("") {
		if ev.Object == "host/"+host && strings.HasPrefix(ev.Kind, "host.") && ev.Kind != "host.joined" {
			out = append(out, ev.Kind)
		}
	}
	return out
}

// A host that stops renewing goes suspect, failed and fenced, one event
// each, at the policy's timings; then its VM restarts on the other host
// with a new disk owner epoch, and the host is ready again once it
// renews. Before issue 15 part 2 the host went "down" and its VMs stayed.
func TestHostStatesFollowRenewals(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	e.addHost("h2", 4, 4*model.GiB, nil)
	e.createVM("v", 1, 1*model.GiB)
	cfg := e.config("a", nil)
	cfg.LeaseTTL = time.Minute
	audit := &recorder{}
	cfg.Audit = audit
	m, _ := e.start(cfg)
	eventually(t, "leader", m.IsLeader)
	eventually(t, "v placed", func() bool { return e.vm("v").Status.Host == "h1" })

	p := model.DefaultHAPolicy() // suspect 4 s, fence 6 s, margin 2 s
	e.stepBeating(2*time.Second, "h1", "h2")
	silent := time.Duration(e.hostTTL)*time.Second + 500*time.Millisecond // h1's lease expires
	e.stepBeating(silent, "h2")
	eventually(t, "h1 suspect", func() bool { return e.host("h1").State == model.HostSuspect })
	e.stepBeating(p.Fence()-silent+time.Second, "h2") // the key was seen gone up to a step late
	eventually(t, "h1 failed", func() bool { return e.host("h1").State == model.HostFailed })
	if vm := e.vm("v"); vm.Status.Host != "h1" {
		t.Fatalf("v moved to %s before the fence margin passed", vm.Status.Host)
	}
	e.stepBeating(p.Margin(), "h2")
	eventually(t, "h1 fenced", func() bool { return e.host("h1").State == model.HostFenced })
	eventually(t, "v restarted on h2", func() bool { return e.vm("v").Status.Host == "h2" })
	vm := e.vm("v")
	if vm.Status.Owner == nil || vm.Status.Owner.Host != "h2" || vm.Status.Owner.Epoch != 1 || vm.Status.Phase != model.PhaseCreating {
		t.Fatalf("restarted VM: owner %+v phase %s", vm.Status.Owner, vm.Status.Phase)
	}
	// the fencing and the restart are decision records of the audit trail
	if recs := audit.actions(model.AuditHostFenced); len(recs) != 1 || recs[0].Host != "h1" || !strings.Contains(recs[0].Reason, "timeout") {
		t.Errorf("fence records = %+v, want one for h1 by timeout", recs)
	}
	if recs := audit.actions(model.AuditHARestart); len(recs) != 1 || recs[0].Host != "h2" || recs[0].From != "h1" ||
		recs[0].Object != "vm/p/v" || recs[0].Outcome != "ok" {
		t.Errorf("restart records = %+v, want v from h1 to h2", recs)
	}
	if a := e.alloc("h1"); a.VMs["p/v"] {
		t.Fatal("the fenced host's allocation still holds v")
	}
	if a := e.alloc("h2"); !a.VMs["p/v"] || a.Used.Memory != model.GiB {
		t.Fatalf("h2's allocation = %+v", a)
	}
	if s := e.host("h2").State; s != model.HostReady {
		t.Errorf("h2 is %s, want ready (it renews)", s)
	}
	l, err := e.st.Grant(context.Background(), e.hostTTL) // h1's agent is back: a new lease
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.Txn(context.Background(), nil, []store.Op{store.PutWithLease(store.AliveKey("h1"), []byte("{}"), l)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "h1 ready again", func() bool { return e.host("h1").State == model.HostReady })
	want := []string{"host.suspect", "host.failed", "host.fenced", "host.up"}
	if got := hostKinds(e, "h1"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("h1 events = %v, want %v", got, want)
	}
	if e.vm("v").Status.Host != "h2" {
		t.Fatal("v went back to h1")
	}
	eventually(t, "failover recorded", func() bool {
		s, _, err := e.repo.GetHAState(context.Background())
		return err == nil && len(s.Failovers) == 1 && s.Failovers[0].Host == "h1" && s.Failovers[0].Restarted == 1
	})
}

func (e *env) alloc(host string) *model.Allocation {
	e.t.Helper()
	a, err := e.repo.GetAllocation(context.Background(), host)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func TestAdministrativeStatesUntouchedByLiveness(t *testing.T) {
	e := newEnv(t)
	for _, s := range []model.HostState{model.HostMaintenance, model.HostStandby} {
		name := "h-" + string(s)
		e.addHost(name, 2, 2*model.GiB, nil)
		if _, err := e.repo.UpdateHost(context.Background(), name, func(h *model.Host) error { h.State = s; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	e.addHost("ready", 2, 2*model.GiB, nil)
	cfg := e.config("a", nil)
	cfg.LeaseTTL = time.Minute
	e.start(cfg)
	time.Sleep(50 * time.Millisecond)
	e.clock.Step(time.Minute)
	e.st.ExpireLeases()
	time.Sleep(100 * time.Millisecond) // HA sees the alive key go
	e.clock.Step(time.Minute)
	eventually(t, "silent ready host fenced", func() bool { return e.host("ready").State == model.HostFenced })
	for _, s := range []model.HostState{model.HostMaintenance, model.HostStandby} {
		if got := e.host("h-" + string(s)).State; got != s {
			t.Errorf("host in %s moved to %s", s, got)
		}
	}
}

// lease returns the lease of a host's liveness key.
func lease(t *testing.T, e *env, host string) store.LeaseID {
	t.Helper()
	kv, err := e.st.Get(context.Background(), store.AliveKey(host))
	if err != nil {
		t.Fatal(err)
	}
	return kv.Lease
}

// A new leader does not trust a renewal time it did not see move: a host
// whose record is an hour old is given the whole suspect time from the
// start of the term (another server's clock, or a stale cache, must never
// shorten the wait before a fence).
func TestNewLeaderWaitsAFullTimeout(t *testing.T) {
	e := newEnv(t)
	_, err := e.repo.UpsertHost(context.Background(), "old", func(h *model.Host, _ bool) error {
		h.State, h.Capacity, h.LastSeen = model.HostReady, model.Resources{CPUs: 2, Memory: model.GiB}, e.clock.Now().Add(-time.Hour)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config("a", nil)
	cfg.LeaseTTL = time.Minute
	m, _ := e.start(cfg)
	eventually(t, "leader", m.IsLeader)
	time.Sleep(100 * time.Millisecond) // a few passes
	if s := e.host("old").State; s != model.HostReady {
		t.Fatalf("host marked %s at the start of a term", s)
	}
	e.clock.Step(model.DefaultHAPolicy().Suspect())
	eventually(t, "suspect after the timeout", func() bool { return e.host("old").State == model.HostSuspect })
}

type countingFencer struct{ n atomic.Int32 }

func (f *countingFencer) Fence(context.Context, model.Host) error { f.n.Add(1); return nil }

// A fence command that reports success fences a failed host at once,
// without the margin, and the failover says so.
func TestFenceCommandSkipsTheMargin(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	e.addHost("h2", 4, 4*model.GiB, nil)
	e.createVM("v", 1, model.GiB)
	f := &countingFencer{}
	cfg := e.config("a", nil)
	cfg.LeaseTTL, cfg.Fencer = time.Minute, f
	m, _ := e.start(cfg)
	eventually(t, "leader", m.IsLeader)
	eventually(t, "v placed", func() bool { return e.vm("v").Status.Host == "h1" })
	e.stepBeating(model.DefaultHAPolicy().Fence()+time.Second, "h2")
	eventually(t, "h1 fenced", func() bool { return e.host("h1").State == model.HostFenced })
	eventually(t, "v on h2", func() bool { return e.vm("v").Status.Host == "h2" })
	if f.n.Load() != 1 {
		t.Fatalf("fence command ran %d times, want 1", f.n.Load())
	}
	eventually(t, "failover by command", func() bool {
		s, _, _ := e.repo.GetHAState(context.Background())
		return s != nil && len(s.Failovers) == 1 && s.Failovers[0].FenceBy == "command"
	})
}

// Config.HostDownGrace (tools that seed hosts without agents) delays the
// whole HA timeline: a silent host stays ready within it.
func TestHostDownGraceDelaysHA(t *testing.T) {
	e := newEnv(t)
	e.addHost("seeded", 2, 2*model.GiB, nil)
	cfg := e.config("a", nil)
	cfg.LeaseTTL, cfg.HostDownGrace = 10*time.Hour, time.Hour // the leader outlives the clock steps
	m, _ := e.start(cfg)
	eventually(t, "leader", m.IsLeader)
	time.Sleep(50 * time.Millisecond)
	e.clock.Step(30 * time.Minute)
	time.Sleep(100 * time.Millisecond) // several passes
	if s := e.host("seeded").State; s != model.HostReady {
		t.Fatalf("a host within HostDownGrace is %s", s)
	}
	e.clock.Step(time.Hour)
	e.st.ExpireLeases()
	time.Sleep(100 * time.Millisecond) // HA sees the alive key go
	e.clock.Step(2 * time.Hour)
	eventually(t, "fenced after the grace", func() bool { return e.host("seeded").State == model.HostFenced })
}
