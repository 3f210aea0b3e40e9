package controller

import (
	"context"
	"testing"
	"time"
)

func leaders(ms ...*Manager) int {
	n := 0
	for _, m := range ms {
		if m.IsLeader() {
			n++
		}
	}
	return n
}

func TestOneLeaderAndHandoverOnShutdown(t *testing.T) {
	e := newEnv(t)
	a, stopA := e.start(e.config("a", nil))
	eventually(t, "a leads", a.IsLeader)
	b, _ := e.start(e.config("b", nil))
	eventually(t, "one leader", func() bool { return leaders(a, b) == 1 })

	first, other, stopFirst := a, b, stopA
	if b.IsLeader() {
		t.Fatal("b should not lead: a started first and stays leader with a live lease")
	}
	name, err := other.Leader(context.Background())
	if err != nil || name != "a" {
		t.Fatalf("Leader() = %q, %v; want a", name, err)
	}
	// The leader stays the leader while its lease is kept alive.
	time.Sleep(50 * time.Millisecond)
	if !first.IsLeader() || other.IsLeader() {
		t.Fatal("leadership moved without cause")
	}

	stopFirst() // a resigns: its lease is revoked
	eventually(t, "b takes over", other.IsLeader)
	if first.IsLeader() {
		t.Error("a still claims leadership after stopping")
	}
	if name, _ := b.Leader(context.Background()); name != "b" {
		t.Errorf("Leader() = %q, want b", name)
	}
}

func TestTakeoverAfterLeaderCrash(t *testing.T) {
	e := newEnv(t)
	cs := &crashStore{Store: e.st}
	a, stopA := e.start(e.config("a", cs))
	eventually(t, "a leads", a.IsLeader)
	b, _ := e.start(e.config("b", nil))

	// kill -9: nothing is revoked; the leader key lingers with its lease.
	cs.crashed.Store(true)
	stopA()
	time.Sleep(30 * time.Millisecond)
	if b.IsLeader() {
		t.Fatal("b took over before the crashed leader's lease expired")
	}
	if name, _ := b.Leader(context.Background()); name != "a" {
		t.Fatalf("leader key = %q, want the crashed a until its lease expires", name)
	}
	e.clock.Step(6 * time.Second) // past the 5 s TTL
	e.st.ExpireLeases()
	eventually(t, "b takes over after the lease expired", b.IsLeader)
}

func TestLeaderLosesLeaseStepsDown(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("a", nil)
	cfg.LeaseTTL = 3 * time.Second // keep-alive every second of real time
	a, _ := e.start(cfg)
	eventually(t, "a leads", a.IsLeader)
	terms := a.terms.Load()
	// The store's clock jumps past the TTL before a keep-alive lands: the
	// lease expires, a notices and campaigns again, winning a new term.
	e.clock.Step(10 * time.Second)
	e.st.ExpireLeases()
	eventually(t, "a new term", func() bool { return a.terms.Load() > terms && a.IsLeader() })
}

func TestManyCandidatesNeverTwoLeaders(t *testing.T) {
	e := newEnv(t)
	var ms []*Manager
	var stops []func()
	for _, id := range []string{"s1", "s2", "s3", "s4", "s5"} {
		m, stop := e.start(e.config(id, nil))
		ms, stops = append(ms, m), append(stops, stop)
	}
	for round := 0; round < 4; round++ {
		eventually(t, "a leader", func() bool { return leaders(ms...) == 1 })
		for i, m := range ms {
			if m.IsLeader() {
				stops[i]() // resign; another must follow
				ms = append(ms[:i], ms[i+1:]...)
				stops = append(stops[:i], stops[i+1:]...)
				break
			}
		}
		if n := leaders(ms...); n > 1 {
			t.Fatalf("%d leaders at once", n)
		}
	}
}
