package server

import (
	"context"
	"encoding/json"
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
	st, a, b := twoServersOneBeat(t)
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
	if err := b.view.usage.caughtUp(ctx); err != nil { // the index trails the cache (sampleindex.go)
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

// A server's own usage samples are not decoded again by its view (the
// hub holds what they hold, fresher): only other servers' samples are
// indexed, and the server still answers its own hosts' usage. A sample
// an earlier process of the server wrote is decoded until this one
// writes its own.
func TestOwnSamplesNotDecodedAgain(t *testing.T) {
	st, a, b := twoServersOneBeat(t)
	ctx := context.Background()
	// a sample of a's address from before this process (a restart)
	old := model.UsageSample{Server: a.AgentAddr(), At: time.Now(), Hosts: []model.HostSample{{Host: "h0", Seen: time.Now(), LeaseTTL: 10,
		Usage: model.HostUsage{CPUPercent: 7}}}}
	raw, _ := json.Marshal(old)
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(store.SampleKey(a.AgentAddr(), 7), raw)}); err != nil {
		t.Fatal(err)
	}
	if err := a.writeSamples(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*testServer{a, b} {
		if _, err := s.view.consistent(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.view.usage.caughtUp(ctx); err != nil {
			t.Fatal(err)
		}
	}
	indexed := func(s *testServer, host string) (ok bool) {
		s.view.usage.read(func(x *sampleIndex) { _, ok = x.hosts[host] })
		return ok
	}
	if indexed(a, "h1") {
		t.Error("server a decoded and indexed its own sample of h1")
	}
	if !indexed(a, "h0") || !indexed(b, "h1") || !indexed(b, "h0") {
		t.Errorf("indexed: a h0 %v, b h1 %v, b h0 %v; want all", indexed(a, "h0"), indexed(b, "h1"), indexed(b, "h0"))
	}
	for _, s := range []*testServer{a, b} {
		if u, _, _, ok := s.HostUsage("h1"); !ok || u.CPUPercent != 42 {
			t.Errorf("h1's usage: %+v %v, want 42 %%", u, ok)
		}
		if u, _, _, ok := s.HostUsage("h0"); !ok || u.CPUPercent != 7 {
			t.Errorf("h0's usage: %+v %v, want 7 %%", u, ok)
		}
	}
}

// A sample transaction is about one shard (at most sampleTxnBytes, or
// one shard alone when larger): the store's raft log keeps its last
// entries in memory (etcdstore.EmbeddedSnapshotCatchUpEntries), and at
// rest the samples are most of them — at 10,000 hosts and 100,000 VMs
// transactions of up to 512 KiB were most of 271 MB of one server's
// heap (docs/scale.md, eighth round).
func TestSampleTransactionsAreSmall(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	s := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour })
	now := time.Now()
	for h := range 10000 {
		host := fmt.Sprintf("fleet-%05d", h)
		vms := map[string]model.VMUsage{}
		for v := range 10 {
			vms[fmt.Sprintf("project-%d/vm-%06d", v%8, h*10+v)] = model.VMUsage{CPUPercent: 12.3, Memory: model.GiB,
				CPUTimeNs: 123456789012, DiskRead: 1234567, DiskWrite: 7654321, NetRx: 99999, NetTx: 88888}
		}
		s.hub.beat(host, now, 31, model.HostUsage{CPUPercent: 40, MemoryUsed: 8 * model.GiB}, vms)
	}
	if err := s.writeSamples(context.Background()); err != nil {
		t.Fatal(err)
	}
	kvs, _, err := st.List(context.Background(), store.SamplesPrefix)
	if err != nil {
		t.Fatal(err)
	}
	txns, shard := map[int64]int{}, 0 // bytes by transaction (revision)
	for _, kv := range kvs {
		txns[kv.ModRev] += len(kv.Value)
		shard = max(shard, len(kv.Value))
	}
	largest := 0
	for _, b := range txns {
		largest = max(largest, b)
	}
	t.Logf("%d shards of up to %d KiB in %d transactions of up to %d KiB", len(kvs), shard>>10, len(txns), largest>>10)
	if largest > max(shard, sampleTxnBytes) || largest > 256<<10 {
		t.Fatalf("a sample transaction of %d KiB (shards of up to %d KiB), want at most one shard or %d KiB, and 256 KiB", largest>>10, shard>>10, sampleTxnBytes>>10)
	}
}

// twoServersOneBeat starts servers a and b on one store, samples written
// only by hand, and has host h1 beat a once at 42 % CPU.
func twoServersOneBeat(t *testing.T) (*memstore.Store, *testServer, *testServer) {
	t.Helper()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	a := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour })
	b := startServer(t, st, func(c *Config) { c.UsageSampleInterval = time.Hour })
	ag := joinAgent(t, a, "h1")
	hb := api.Heartbeat{Host: "h1", Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB}, Driver: "sim",
		Usage: model.HostUsage{CPUPercent: 42}}
	if code := ag.do("PUT", "/agent/v1/heartbeat", hb, nil); code != 200 {
		t.Fatalf("beat: %d", code)
	}
	return st, a, b
}
