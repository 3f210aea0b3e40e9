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

// storeRev reads the store's revision.
func storeRev(t *testing.T, st store.Store) int64 {
	t.Helper()
	_, rev, err := st.List(context.Background(), store.LeaderKey)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// Heartbeats renew the lease and carry usage without writing the store;
// only a change of inventory (or state) writes the host's record. Before,
// every beat rewrote the host and, every 10 s, each VM.
func TestHeartbeatsWriteOnlyChanges(t *testing.T) {
	ts := startServer(t, nil, func(c *Config) { c.UsageSampleInterval = time.Hour })
	ctx := context.Background()
	admin := ts.AdminToken()
	a := joinAgent(t, ts, "h1")
	a.beat()
	ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("v1"), nil)
	if _, err := ts.Repo().UpdateVM(ctx, "default", "v1", func(v *model.VM) error {
		v.Status.Host, v.Status.Phase = "h1", model.PhaseRunning
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var as api.Assignments // the cache has the VM on h1 once this answers it
	a.do("GET", "/agent/v1/assignments", nil, &as)
	before := storeRev(t, ts.st)
	for i := range 30 {
		hb := api.Heartbeat{Host: "h1", Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB, Disk: 100 * model.GiB},
			Driver: "sim", Labels: map[string]string{"zone": "agent-said"}, Usage: model.HostUsage{CPUPercent: float64(i)},
			VMs: []api.VMReport{{Project: "default", Name: "v1", Usage: model.VMUsage{CPUPercent: float64(100 + i), Memory: model.GiB}},
				{Project: "default", Name: "not-mine", Usage: model.VMUsage{CPUPercent: 99}}}}
		if code := a.do("PUT", "/agent/v1/heartbeat", hb, nil); code != 200 {
			t.Fatalf("beat %d: %d", i, code)
		}
	}
	if w := storetest.WritesSince(t, ts.st, before, store.AuditPrefix); len(w) > 0 {
		t.Fatalf("30 heartbeats with an unchanged inventory wrote the store: %v", w)
	}
	// usage is answered from memory
	var h model.Host
	ts.mustCall(200, "GET", "/api/v1/hosts/h1", admin, nil, &h)
	if h.Usage.CPUPercent != 29 || time.Since(h.LastSeen) > time.Minute {
		t.Fatalf("host usage %+v, last seen %s", h.Usage, h.LastSeen)
	}
	var vm model.VM
	ts.mustCall(200, "GET", "/api/v1/vms/v1", admin, nil, &vm)
	if vm.Status.Usage.CPUPercent != 129 || vm.Status.Usage.Memory != model.GiB {
		t.Fatalf("VM usage %+v", vm.Status.Usage)
	}
	if _, _, ok := ts.VMUsage("default/not-mine"); ok {
		t.Fatal("a host reported usage of a VM that is not on it, and it was kept")
	}
	// a changed inventory is written once
	hb := api.Heartbeat{Host: "h1", Capacity: model.Resources{CPUs: 16, Memory: 16 * model.GiB, Disk: 100 * model.GiB},
		Driver: "sim", Labels: map[string]string{"zone": "agent-said"}}
	a.do("PUT", "/agent/v1/heartbeat", hb, nil)
	mid := storeRev(t, ts.st)
	if mid == before {
		t.Fatal("a new capacity was not written")
	}
	if _, err := ts.view.consistent(ctx); err != nil {
		t.Fatal(err)
	}
	a.do("PUT", "/agent/v1/heartbeat", hb, nil)
	a.do("PUT", "/agent/v1/heartbeat", hb, nil)
	if w := storetest.WritesSince(t, ts.st, mid, store.AuditPrefix); len(w) > 0 {
		t.Fatalf("the same new capacity was written again: %v", w)
	}
	stored, _ := ts.Repo().GetHost(ctx, "h1")
	if stored.Capacity.CPUs != 16 {
		t.Fatalf("stored capacity %+v", stored.Capacity)
	}
}

// One server's heartbeats reach another server (and a leader running
// there) through the sampled records.
func TestUsageSamplesReachOtherServers(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	a := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour })
	b := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour })
	ag := joinAgent(t, a, "h1")
	hb := api.Heartbeat{Host: "h1", Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB}, Driver: "sim",
		Usage: model.HostUsage{CPUPercent: 42}}
	if code := ag.do("PUT", "/agent/v1/heartbeat", hb, nil); code != 200 {
		t.Fatalf("beat: %d", code)
	}
	if _, _, _, ok := b.HostUsage("h1"); ok {
		t.Fatal("server b knows h1's usage before any sample")
	}
	ctx := context.Background()
	if err := a.writeSamples(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.view.consistent(ctx); err != nil {
		t.Fatal(err)
	}
	u, seen, ttl, ok := b.HostUsage("h1")
	if !ok || u.CPUPercent != 42 || ttl < int(model.DefaultHAPolicy().Suspect()/time.Second) || time.Since(seen) > time.Minute {
		t.Fatalf("server b: usage %+v seen %s ttl %d ok %v", u, seen, ttl, ok)
	}
	kvs, _, _ := st.List(ctx, store.SamplesPrefix)
	if len(kvs) != 1 {
		t.Fatalf("%d sample records for one host", len(kvs))
	}
}

// A host that moves to another server keeps its lease: the new server
// renews the lease its alive key is attached to instead of granting one
// (a failed server's hosts would otherwise leave thousands of leases to
// expire at once, each a write etcd applies alone).
func TestHeartbeatKeepsTheHostsLease(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	a := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour })
	b := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour })
	ag := joinAgent(t, a, "h1")
	ag.beat()
	ctx := context.Background()
	kv, err := st.Get(ctx, store.AliveKey("h1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.view.consistent(ctx); err != nil {
		t.Fatal(err)
	}
	before := storeRev(t, st)
	viaB := *ag
	viaB.addr = b.AgentAddr()
	for range 3 {
		viaB.beat()
	}
	after, err := st.Get(ctx, store.AliveKey("h1"))
	if err != nil {
		t.Fatal(err)
	}
	if w := storetest.WritesSince(t, st, before, store.AuditPrefix); after.Lease != kv.Lease || len(w) > 0 {
		t.Fatalf("server b granted lease %x and wrote %v; the host's lease is %x", after.Lease, w, kv.Lease)
	}
}

// Samples are split in records of about 128 hosts (at most 64): at rest
// each record is one write per interval, so writes grow with hosts/128,
// and a record no longer needed is deleted.
func TestSampleShardsGrowWithHosts(t *testing.T) {
	u := newUsageHub()
	now := time.Now()
	for _, c := range []struct{ hosts, shards, gone int }{{10, 1, 0}, {300, 3, 0}, {20000, 64, 0}, {10, 1, 63}} {
		u.hosts = map[string]*hostLive{}
		for i := range c.hosts {
			u.beat(fmt.Sprintf("h%05d", i), now, 10, model.HostUsage{}, nil)
		}
		got, gone := u.samples("s", now)
		n := 0
		for _, s := range got {
			n += len(s.Hosts)
		}
		if len(got) != c.shards || n != c.hosts {
			t.Errorf("%d hosts in %d records (%d hosts), want %d records", c.hosts, len(got), n, c.shards)
		}
		if len(gone) != c.gone {
			t.Errorf("%d hosts: %d records to delete, want %d", c.hosts, len(gone), c.gone)
		}
	}
}
