package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/store/storetest"
)

// defaultPace is paceInput with the HA policy's defaults.
func defaultPace(hosts int, stretch float64) paceInput {
	hp := model.DefaultHAPolicy()
	return paceInput{hosts: hosts, budget: DefaultHeartbeatBudget, base: hp.Heartbeat(), suspect: hp.Suspect(),
		fence: hp.Fence(), margin: hp.Margin(), stretch: stretch}
}

func TestPaceTiming(t *testing.T) {
	const s = time.Second
	with := func(in paceInput, edit func(*paceInput)) paceInput { edit(&in); return in }
	for _, c := range []struct {
		name     string
		in       paceInput
		interval time.Duration
		ttl      int
		capped   bool
	}{
		// a plane whose beats are not what loads it: the lease lasts the
		// suspect timeout, as docs/ha.md's timeline says
		{"one host", defaultPace(1, 1), s, 4, false},
		{"200 hosts", defaultPace(200, 1), s, 4, false},
		{"small planes never stretch", defaultPace(150, 3), s, 4, false},
		// large enough to stretch: leases for the longest interval (half
		// the fence timeout), capped at the fence timeout and its margin
		{"1,000 hosts", defaultPace(1000, 1), s, 8, false},
		{"1,000 hosts, stretched", defaultPace(1000, 2), 2 * s, 8, false},
		{"1,000 hosts, stretched past the longest", defaultPace(1000, 5), 3 * s, 8, false},
		{"2,500 hosts", defaultPace(2500, 1), 2500 * time.Millisecond, 8, false},
		// the fence timeout caps the interval at half of it: an agent
		// beating every 10 s under a 6 s fence would fence itself
		{"10,000 hosts, the default fence", defaultPace(10000, 1), 3 * s, 8, true},
		// a fence long enough for the fleet (what test/scale sets)
		{"10,000 hosts, a 20 s fence", with(defaultPace(10000, 1), func(p *paceInput) { p.fence = 20 * s }), 10 * s, 22, false},
		{"10,000 hosts, a 30 s fence", with(defaultPace(10000, 1), func(p *paceInput) { p.fence = 30 * s }), 10 * s, 31, false},
		{"50,000 hosts, no fence", with(defaultPace(50000, 1), func(p *paceInput) { p.fence = 0 }), 10 * s, 31, false},
		{"a fast policy, one host", paceInput{hosts: 1, budget: 1000, base: 500 * time.Millisecond, suspect: 1500 * time.Millisecond,
			fence: 2 * s, margin: 2 * s, stretch: 1}, 500 * time.Millisecond, 3, false},
		{"a fast policy, 3,000 hosts", paceInput{hosts: 3000, budget: 1000, base: 500 * time.Millisecond, suspect: 1500 * time.Millisecond,
			fence: 2 * s, margin: 2 * s, stretch: 1}, s, 4, true},
		{"a budget of 4 beats a second, 6 hosts", with(defaultPace(6, 1), func(p *paceInput) { p.budget = 4 }), 1500 * time.Millisecond, 8, false},
	} {
		got := paceTiming(c.in)
		if got.interval != c.interval || got.ttl != c.ttl || got.capped != c.capped {
			t.Errorf("%s: every %s with a %d s lease (capped %v), want %s, %d s (capped %v)",
				c.name, got.interval, got.ttl, got.capped, c.interval, c.ttl, c.capped)
		}
	}
}

// Whatever the stretch, the interval stays within the longest one (never
// past half the fence timeout), and the lease TTL does not move: it was
// granted for the longest interval, so a stretch renews every lease as it
// is (before, the TTL followed the interval, and a server granted a new
// lease, a write, to every host whose lease was shorter than the new
// interval asked).
func TestLeaseOutlivesTheInterval(t *testing.T) {
	hp := model.DefaultHAPolicy()
	for _, fence := range []time.Duration{2 * time.Second, hp.Fence(), 20 * time.Second, 0} {
		for _, hosts := range []int{0, 1, 100, 200, 201, 999, 1000, 3000, 10000, 50000} {
			in := defaultPace(hosts, 1)
			in.fence = fence
			if fence == 2*time.Second {
				in.base, in.suspect = 500*time.Millisecond, 1500*time.Millisecond
			}
			first := paceTiming(in)
			for _, stretch := range []float64{1, 1.3, 2, 3, 10} {
				in.stretch = stretch
				got := paceTiming(in)
				where := fmt.Sprintf("%d hosts, fence %s, stretch %.1f", hosts, fence, stretch)
				if got.ttl != first.ttl {
					t.Errorf("%s: a %d s lease, %d s unstretched: a stretch would grant every lease again", where, got.ttl, first.ttl)
				}
				if got.interval > got.longest || (fence > 0 && got.longest > max(fence/2, 500*time.Millisecond)) {
					t.Errorf("%s: every %s (longest %s): past half the fence timeout", where, got.interval, got.longest)
				}
				if lease := time.Duration(got.ttl) * time.Second; lease < 2*got.longest || lease < in.suspect {
					t.Errorf("%s: a %s lease for beats as far apart as %s (suspect %s)", where, lease, got.longest, in.suspect)
				}
			}
		}
	}
}

// The interval grows while renewals lag and shrinks back once they are
// fast again; in between it holds.
func TestPaceStretchesWhileRenewalsLag(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := beatPace{from: now}
	in := defaultPace(1000, 1)
	// window runs one window of renewals that each took d and returns the
	// interval after it
	window := func(d time.Duration, lapsed bool) time.Duration {
		tm := paceTiming(in)
		for range 50 {
			now = now.Add(max(paceWindow, tm.interval) / 50)
			p.observe(now, d, lapsed, tm.interval, tm.limit)
		}
		in.stretch = p.factor()
		return paceTiming(in).interval
	}
	var got []time.Duration
	for _, w := range []struct {
		d      time.Duration
		lapsed bool
	}{{300 * time.Millisecond, false}, {300 * time.Millisecond, false}, {time.Second, false}, {time.Second, false},
		{100 * time.Millisecond, false}, {10 * time.Millisecond, false}, {10 * time.Millisecond, false},
		{10 * time.Millisecond, false}, {10 * time.Millisecond, false}, {10 * time.Millisecond, false},
		{10 * time.Millisecond, false}, {10 * time.Millisecond, true}} {
		got = append(got, window(w.d, w.lapsed))
	}
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	// slow ×4: 1.5, 2.25 (2.3 s), 3.4 capped at 3 s; 100 ms holds; fast
	// shrinks by 0.8 a window to 1 s; lapsed leases grow it again
	want := ms(1500, 2300, 3000, 3000, 3000, 2400, 1900, 1500, 1200, 1000, 1000, 1500)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("intervals after each window: %v, want %v", got, want)
	}

	// a plane too small to stretch stays at the policy's heartbeat
	var q beatPace
	small := defaultPace(100, 1)
	tm := paceTiming(small)
	for i := range 200 {
		q.observe(now.Add(time.Duration(i)*100*time.Millisecond), 2*time.Second, true, tm.interval, tm.limit)
	}
	small.stretch = q.factor()
	if got := paceTiming(small); got.interval != time.Second || got.ttl != 4 {
		t.Fatalf("100 hosts with lagging renewals: every %s with a %d s lease, want 1s and 4 s", got.interval, got.ttl)
	}
}

// beatAnswer sends one heartbeat and returns the server's answer.
func beatAnswer(t *testing.T, a *testAgent) api.HeartbeatResponse {
	t.Helper()
	hb := api.Heartbeat{Host: a.host, Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB, Disk: 100 * model.GiB},
		Driver: "sim", Labels: map[string]string{"zone": "agent-said"}}
	var res api.HeartbeatResponse
	if code := a.do("PUT", "/agent/v1/heartbeat", hb, &res); code != 200 {
		t.Fatalf("heartbeat of %s: %d", a.host, code)
	}
	return res
}

// A server whose renewals lag tells its agents to beat less often at
// once, and renews their leases as they are: no grant, no write.
func TestLaggingRenewalsStretchTheIntervalNotTheLease(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	// a budget of 4 beats a second: one host is a plane large enough to
	// stretch (the default's 1,000 would take 200 hosts)
	a := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour; c.HeartbeatBudget = 4 })
	ag := joinAgent(t, a, "h1")
	first := beatAnswer(t, ag)
	ctx := context.Background()
	kv, err := st.Get(ctx, store.AliveKey("h1"))
	if err != nil {
		t.Fatal(err)
	}
	// a window of renewals slower than paceSlow
	now := time.Now()
	for i := range paceMinBeats {
		a.pace.observe(now.Add(time.Duration(i)*paceWindow/(paceMinBeats-1)+time.Second), time.Second, false, time.Second, 3)
	}
	before := storeRev(t, st)
	second := beatAnswer(t, ag)
	if first.IntervalMillis != 1000 || second.IntervalMillis != 1500 {
		t.Fatalf("beats every %d ms, then %d ms after lagging renewals; want 1000 then 1500", first.IntervalMillis, second.IntervalMillis)
	}
	after, err := st.Get(ctx, store.AliveKey("h1"))
	if err != nil {
		t.Fatal(err)
	}
	if w := storetest.WritesSince(t, st, before, store.AuditPrefix); after.Lease != kv.Lease || len(w) > 0 ||
		second.LeaseTTLSeconds != first.LeaseTTLSeconds {
		t.Fatalf("a stretched interval granted lease %x (%d s, was %x, %d s) and wrote %v",
			after.Lease, second.LeaseTTLSeconds, kv.Lease, first.LeaseTTLSeconds, w)
	}
}

// Each server chooses the interval from the hosts of the whole control
// plane: six hosts beating to three servers, two each, are six hosts on
// every server (before, each server counted its own two).
func TestHeartbeatIntervalCountsTheWholeControlPlane(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	var servers []*testServer
	for range 3 {
		servers = append(servers, startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour; c.HeartbeatBudget = 4 }))
	}
	var agents []*testAgent
	for i := range 6 {
		ag := joinAgent(t, servers[0], fmt.Sprintf("h%d", i))
		via := *ag
		via.addr = servers[i%3].AgentAddr()
		agents = append(agents, &via)
		beatAnswer(t, &via)
	}
	ctx := context.Background()
	for _, s := range servers {
		if _, err := s.view.consistent(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, ag := range agents {
		// 6 hosts ÷ 4 beats a second; by the server's own two, 1 s
		if got := beatAnswer(t, ag); got.IntervalMillis != 1500 {
			t.Errorf("server %d told %s to beat every %d ms, want 1500 (6 hosts in the plane)", i%3, ag.host, got.IntervalMillis)
		}
	}
}
