package controller

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

func TestHostDownWhenLeaseExpiresAndUpWhenBack(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	e.addHost("h2", 4, 4*model.GiB, nil)
	e.createVM("v", 1, 1*model.GiB)
	cfg := e.config("a", nil)
	cfg.LeaseTTL = time.Minute // the leader outlives the hosts' 5 s leases
	m, _ := e.start(cfg)
	eventually(t, "leader", m.IsLeader)
	eventually(t, "v placed", func() bool { return e.vm("v").Status.Host == "h1" })

	// h2's agent keeps its lease alive; h1's agent is gone.
	e.clock.Step(4 * time.Second)
	if err := e.st.KeepAlive(context.Background(), lease(t, e, "h2")); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(2 * time.Second)
	e.st.ExpireLeases()
	eventually(t, "h1 down", func() bool { return e.host("h1").State == model.HostDown })
	if s := e.host("h2").State; s != model.HostReady {
		t.Errorf("h2 is %s, want ready (its lease is alive)", s)
	}
	if evs := e.events("host.down"); len(evs) != 1 || evs[0].Object != "host/h1" {
		t.Errorf("host.down events = %+v, want one for h1", evs)
	}
	// VMs on a down host are left alone (HA is another controller's job).
	if vm := e.vm("v"); vm.Status.Host != "h1" || vm.Status.Phase != model.PhaseCreating {
		t.Errorf("v changed on host down: host %q phase %s", vm.Status.Host, vm.Status.Phase)
	}

	// The agent comes back with a new lease.
	l, err := e.st.Grant(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.Txn(context.Background(), nil, []store.Op{store.PutWithLease(store.AliveKey("h1"), []byte("1"), l)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "h1 ready again", func() bool { return e.host("h1").State == model.HostReady })
	if n := len(e.events("host.up")); n != 1 {
		t.Errorf("%d host.up events, want 1", n)
	}
}

func TestAdministrativeStatesUntouchedByLiveness(t *testing.T) {
	e := newEnv(t)
	for _, s := range []model.HostState{model.HostMaintenance, model.HostStandby, model.HostFenced} {
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
	e.clock.Step(10 * time.Second)
	e.st.ExpireLeases()
	eventually(t, "ready host down", func() bool { return e.host("ready").State == model.HostDown })
	for _, s := range []model.HostState{model.HostMaintenance, model.HostStandby, model.HostFenced} {
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

func TestNewHostWithoutHeartbeatGetsGrace(t *testing.T) {
	e := newEnv(t)
	// registered, but the agent's first heartbeat has not arrived yet
	_, err := e.repo.UpsertHost(context.Background(), "fresh", func(h *model.Host, _ bool) error {
		h.State, h.Capacity, h.LastSeen = model.HostReady, model.Resources{CPUs: 2, Memory: model.GiB}, e.clock.Now()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config("a", nil)
	cfg.LeaseTTL = time.Minute
	cfg.HostDownGrace = 30 * time.Second
	m, _ := e.start(cfg)
	eventually(t, "leader", m.IsLeader)
	time.Sleep(60 * time.Millisecond) // a few resync passes
	if s := e.host("fresh").State; s != model.HostReady {
		t.Fatalf("host marked %s within its grace period", s)
	}
	e.clock.Step(31 * time.Second)
	eventually(t, "down after grace", func() bool { return e.host("fresh").State == model.HostDown })
}
