package controller

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// fakeUsageView is a UsageView as the server answers it from heartbeats.
type fakeUsageView struct {
	mu    sync.Mutex
	hosts map[string]model.HostSample
	vms   map[string]model.VMUsage
	at    time.Time
}

func (f *fakeUsageView) HostUsage(host string) (model.HostUsage, time.Time, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.hosts[host]
	return h.Usage, h.Seen, h.LeaseTTL, ok
}

func (f *fakeUsageView) VMUsage(key string) (model.VMUsage, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.vms[key]
	return u, f.at, ok
}

// With heartbeats no longer writing usage into the records, the energy
// ledger splits a host's draw by the usage the view answers.
func TestEnergyReadsTheUsageView(t *testing.T) {
	s := powerSettings()
	s.Power.Standby = false
	g := newGreenEnv(t, s)
	view := &fakeUsageView{at: g.clock.Now().Add(time.Hour), hosts: map[string]model.HostSample{}, vms: map[string]model.VMUsage{}}
	g.r.m.cfg.Usage = view
	g.r.c.usage = view
	g.addHost("h1", 2, 16*model.GiB, map[string]string{model.LabelPowerModel: "ml110g5"})
	g.placeVM("a1", "h1", 1, 0) // the records say idle
	g.placeVM("a2", "h1", 1, 0)
	view.hosts["h1"] = model.HostSample{Host: "h1", Seen: g.clock.Now(), LeaseTTL: 10, Usage: model.HostUsage{CPUPercent: 50}}
	view.vms["p/a1"], view.vms["p/a2"] = model.VMUsage{CPUPercent: 60}, model.VMUsage{CPUPercent: 40}
	g.must(g.r.energyStep)
	for range 12 {
		g.clock.Step(5 * time.Minute)
		g.must(g.r.energyStep)
	}
	rec := g.ledger()
	// ML110 G5 at 50 %: 116 W for an hour, split 60:40
	for name, want := range map[string]float64{"h1": 0.116, "p/a1": 0.6 * 0.116, "p/a2": 0.4 * 0.116} {
		got := rec.HostJ[name]
		if name != "h1" {
			got = rec.VMJ[name]
		}
		if math.Abs(got/3.6e6-want) > 1e-9 {
			t.Errorf("%s = %.6f kWh, want %.6f", name, got/3.6e6, want)
		}
	}
}

// Host HA bounds a host's last renewal by its alive key (heartbeats renew
// the lease it is attached to and no longer write the host record): while
// the key is there the host stays ready whatever its record's (old)
// LastSeen says; once the key vanished, the last renewal was at least the
// lease's TTL (from the alive record) before: failed at once when that is
// the fence timeout, fenced after the margin.
func TestHALivenessFollowsTheAliveKey(t *testing.T) {
	g := newGreenEnv(t, model.DefaultBalanceSettings())
	ctx := context.Background()
	g.addHost("h1", 2, 16*model.GiB, nil)
	ttl := int(model.DefaultHAPolicy().Fence() / time.Second) // a lease as long as the fence timeout
	lease, err := g.st.Grant(ctx, int64(ttl))
	if err != nil {
		t.Fatal(err)
	}
	rec := mustJSON(model.AliveRecord{Server: "s1", LeaseTTL: ttl})
	if _, _, err := g.st.Txn(ctx, nil, []store.Op{store.PutWithLease(store.AliveKey("h1"), rec, lease)}); err != nil {
		t.Fatal(err)
	}
	state := func() model.HostState { h, _ := g.repo.GetHost(ctx, "h1"); return h.State }
	g.must(g.r.haPass)
	g.clock.Step(time.Hour) // the record's LastSeen is an hour old
	g.must(g.r.haPass)
	if s := state(); s != model.HostReady {
		t.Fatalf("a host whose alive key is there went %s", s)
	}
	if err := g.st.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	g.must(g.r.haPass) // gone: the last renewal was at least the TTL ago
	if s := state(); s != model.HostFailed {
		t.Fatalf("a host whose lease expired is %s, want failed (TTL = fence timeout)", s)
	}
	g.clock.Step(model.DefaultHAPolicy().Margin())
	g.must(g.r.haPass)
	if s := state(); s != model.HostFenced {
		t.Fatalf("after the margin the host is %s, want fenced", s)
	}
}

// Samples of a server that stopped writing them are pruned by the
// leader's compaction; fresh ones stay.
func TestPruneSamples(t *testing.T) {
	g := newGreenEnv(t, model.DefaultBalanceSettings())
	now := g.clock.Now()
	put := func(server string, at time.Time) {
		b := mustJSON(model.UsageSample{Server: server, At: at})
		if _, _, err := g.st.Txn(context.Background(), nil, []store.Op{store.Put(store.SampleKey(server, 1), b)}); err != nil {
			t.Fatal(err)
		}
	}
	put("old:1", now.Add(-SampleRetention-time.Minute))
	put("new:1", now.Add(-time.Minute))
	if err := g.r.pruneSamples(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	kvs, _, _ := g.st.List(context.Background(), store.SamplesPrefix)
	if len(kvs) != 1 || kvs[0].Key != store.SampleKey("new:1", 1) {
		t.Fatalf("after pruning: %v", kvs)
	}
}

// Scaling groups read members' CPU through the UsageView when one is
// wired: heartbeats no longer refresh the usage in VM records.
func TestGroupsReadTheUsageView(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	vm := &model.VM{Meta: model.Meta{Project: "p", Name: "a"}, Spec: model.VMSpec{VCPUs: 2}}
	vm.Status.Usage.CPUPercent = 20
	tests := []struct {
		name      string
		recordAge time.Duration // 0: never observed
		viewAge   time.Duration // 0: the view has none
		want      float64
		ok        bool
	}{
		{name: "view fresh, record never written", viewAge: 5 * time.Second, want: 75, ok: true},
		{name: "view from a sample of another server", viewAge: 50 * time.Second, want: 75, ok: true},
		{name: "view too old", viewAge: 2 * time.Minute, ok: false},
		{name: "record fresher than the view", recordAge: time.Second, viewAge: 10 * time.Second, want: 10, ok: true},
		{name: "neither", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := *vm
			if tc.recordAge > 0 {
				v.Status.ObservedAt = now.Add(-tc.recordAge)
			}
			view := &fakeUsageView{vms: map[string]model.VMUsage{}}
			if tc.viewAge > 0 {
				view.vms[v.Key()] = model.VMUsage{CPUPercent: 150}
				view.at = now.Add(-tc.viewAge)
			}
			got, ok := viewUsage{view}.VMCPU(&v, now)
			if ok != tc.ok || (ok && math.Abs(got-tc.want) > 1e-9) {
				t.Errorf("VMCPU = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
