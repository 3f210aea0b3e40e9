package server

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"sort"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Usage lives where it is needed, not in the host and VM records: every
// heartbeat lands in this server's usageHub (memory); the server writes
// it into the store as model.UsageSample records, one per shard of
// hosts, every UsageSampleInterval; every server's view indexes the
// samples of all servers. HostUsage and VMUsage answer the freshest of
// the two, which is what the leader's controllers (balancer, energy,
// power) and the API read. A heartbeat therefore writes etcd only when
// the host's inventory or state changes (heartbeat in agent.go).

// Defaults of the sampling.
const (
	// DefaultUsageSampleInterval is how often a server writes its hosts'
	// usage into the store.
	DefaultUsageSampleInterval = 30 * time.Second
	// maxSampleShards is how many records a server's samples are split in
	// at most; hostsPerShard how many hosts a record holds before another
	// is added (at rest each record is one write per interval).
	maxSampleShards = 64
	hostsPerShard   = 128
	// sampleTxnBytes bounds the bytes of one sample transaction; a shard
	// larger than that goes alone. Each transaction is one raft entry,
	// and the embedded member keeps its last entries in memory for slow
	// followers (etcdstore.EmbeddedSnapshotCatchUpEntries): at rest the
	// samples are most of those entries, so their size is what the log
	// weighs — transactions of up to 512 KiB held about 190 MB of it at
	// 10,000 hosts (docs/scale.md, eighth round).
	sampleTxnBytes = 128 << 10
	// forgetHostAfter is how long a host that stopped beating stays in
	// the hub (and so in the samples, with its last Seen).
	forgetHostAfter = 10 * time.Minute
)

// hostLive is what the hub holds of one host.
type hostLive struct {
	seen  time.Time
	ttl   int
	usage model.HostUsage
	vms   map[string]model.VMUsage // by project/name
	// order is vms' keys in the order of the beat that made vms (nil
	// when it came as a map): a beat that reports the same VMs in the
	// same order is applied in place (beatReports).
	order []string
}

// usageHub is this server's memory of its hosts' heartbeats.
type usageHub struct {
	mu     sync.Mutex
	hosts  map[string]*hostLive
	vmHost map[string]string // VM key → the host that reported it
	shards map[int]bool      // shards this server has written
	// wrote holds the keys of the samples this process has written (its
	// own lock: the view asks while it applies the watch). The view
	// does not decode them again: what they hold the hub holds, fresher
	// (a server's own samples were its largest decoded table at 10,000
	// hosts: docs/scale.md, eighth round).
	wrote sync.Map
}

// noteWriting marks key as this process's sample before it is written.
func (u *usageHub) noteWriting(key string) { u.wrote.Store(key, true) }

// own says whether this process has written the sample at key. A sample
// an earlier process of this server wrote is not: the view decodes it
// until this one writes its own, so that the hosts' usage survives a
// restart until they beat again.
func (u *usageHub) own(key string) bool {
	_, ok := u.wrote.Load(key)
	return ok
}

func newUsageHub() *usageHub {
	return &usageHub{hosts: map[string]*hostLive{}, vmHost: map[string]string{}, shards: map[int]bool{}}
}

// beat records one heartbeat; vms holds only VMs assigned to host.
func (u *usageHub) beat(host string, now time.Time, ttl int, usage model.HostUsage, vms map[string]model.VMUsage) {
	u.beatOrdered(host, now, ttl, usage, vms, nil)
}

// beatReports records one heartbeat from its VM reports, of which it
// keeps those mine marks (the VMs assigned to host), as beat does with
// them in a map. A host that reports the same VMs as in its last beat,
// in any order (every beat at rest), is updated in place: no map, key or
// record made a beat (25 allocations a beat of 10 VMs before: what the
// collector spent most of its time on at rest came from such;
// docs/scale.md, eighth round).
func (u *usageHub) beatReports(host string, now time.Time, ttl int, usage model.HostUsage, reps []api.VMReport, mine []bool) {
	var room [maxInPlace]int
	u.mu.Lock()
	if old := u.hosts[host]; old != nil {
		if at, ok := old.sameVMs(reps, mine, room[:0]); ok {
			old.seen, old.ttl, old.usage = now, ttl, usage
			for j, k := range old.order {
				old.vms[k] = reps[at[j]].Usage
				if u.vmHost[k] != host {
					u.vmHost[k] = host
				}
			}
			u.mu.Unlock()
			return
		}
	}
	u.mu.Unlock()
	vms := make(map[string]model.VMUsage, len(reps))
	order := make([]string, 0, len(reps))
	for i := range reps {
		if mine[i] {
			k := reps[i].Project + "/" + reps[i].Name
			if _, twice := vms[k]; !twice {
				order = append(order, k)
			}
			vms[k] = reps[i].Usage
		}
	}
	u.beatOrdered(host, now, ttl, usage, vms, order)
}

// maxInPlace bounds the VM reports of a beat applied in place (a beat
// with more is applied through a new map: the matching is quadratic
// when the order changes).
const maxInPlace = 64

// sameVMs says whether the reports mine marks name h's VMs, each once,
// in any order; at[j] is then the report of h.order[j].
func (h *hostLive) sameVMs(reps []api.VMReport, mine []bool, at []int) ([]int, bool) {
	n := len(h.order)
	if n != len(h.vms) || len(reps) > maxInPlace {
		return nil, false
	}
	var used [maxInPlace]bool
	mineN, next := 0, 0 // next: the first report not yet matched, in order
	for i := range reps {
		if mine[i] {
			mineN++
		}
	}
	if mineN != n {
		return nil, false
	}
	for _, k := range h.order {
		found := -1
		for i := next; i < len(reps) && found < 0; i++ { // the same order as last time: found at once
			if mine[i] && !used[i] && isKey(k, reps[i].Project, reps[i].Name) {
				found = i
			}
		}
		for i := 0; i < next && found < 0; i++ {
			if mine[i] && !used[i] && isKey(k, reps[i].Project, reps[i].Name) {
				found = i
			}
		}
		if found < 0 {
			return nil, false
		}
		used[found], next = true, found+1
		at = append(at, found)
	}
	return at, true
}

// isKey says whether k is project/name.
func isKey(k, project, name string) bool {
	return len(k) == len(project)+1+len(name) && k[len(project)] == '/' && k[:len(project)] == project && k[len(project)+1:] == name
}

func (u *usageHub) beatOrdered(host string, now time.Time, ttl int, usage model.HostUsage, vms map[string]model.VMUsage, order []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if old := u.hosts[host]; old != nil {
		for k := range old.vms {
			if _, still := vms[k]; !still && u.vmHost[k] == host {
				delete(u.vmHost, k)
			}
		}
	}
	for k := range vms {
		u.vmHost[k] = host
	}
	u.hosts[host] = &hostLive{seen: now, ttl: ttl, usage: usage, vms: vms, order: order}
}

func (u *usageHub) host(name string) (hostLive, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	h := u.hosts[name]
	if h == nil {
		return hostLive{}, false
	}
	// not its VMs: a later beat changes them in place
	return hostLive{seen: h.seen, ttl: h.ttl, usage: h.usage}, true
}

func (u *usageHub) vm(key string) (model.VMUsage, time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	h := u.hosts[u.vmHost[key]]
	if h == nil {
		return model.VMUsage{}, time.Time{}, false
	}
	v, ok := h.vms[key]
	return v, h.seen, ok
}

// vmsInto fills us and at with the VMs' usage and report times (at[i]
// left as is for a VM the hub does not hold), under one take of the lock.
func (u *usageHub) vmsInto(keys []string, us []model.VMUsage, at []time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, key := range keys {
		if h := u.hosts[u.vmHost[key]]; h != nil {
			if v, ok := h.vms[key]; ok {
				us[i], at[i] = v, h.seen
			}
		}
	}
}

// shardOf is the record of n a host's sample goes to.
func shardOf(host string, n int) int {
	f := fnv.New32a()
	_, _ = f.Write([]byte(host))
	return int(f.Sum32() % uint32(n))
}

// samples builds this server's records, forgetting hosts silent for
// longer than forgetHostAfter; gone lists shards written before that
// are empty now.
func (u *usageHub) samples(server string, now time.Time) (out map[int]*model.UsageSample, gone []int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	out = map[int]*model.UsageSample{}
	shards := min(maxSampleShards, max(1, (len(u.hosts)+hostsPerShard-1)/hostsPerShard))
	for name, h := range u.hosts {
		if now.Sub(h.seen) > forgetHostAfter {
			for k := range h.vms {
				if u.vmHost[k] == name {
					delete(u.vmHost, k)
				}
			}
			delete(u.hosts, name)
			continue
		}
		i := shardOf(name, shards)
		s := out[i]
		if s == nil {
			s = &model.UsageSample{Server: server, At: now}
			out[i] = s
		}
		hs := model.HostSample{Host: name, Seen: h.seen, LeaseTTL: h.ttl, Usage: h.usage, VMs: make([]model.VMSample, 0, len(h.vms))}
		for k, v := range h.vms {
			hs.VMs = append(hs.VMs, model.VMSample{Key: k, Usage: v})
		}
		sort.Slice(hs.VMs, func(a, b int) bool { return hs.VMs[a].Key < hs.VMs[b].Key })
		s.Hosts = append(s.Hosts, hs)
	}
	for i := range u.shards {
		if out[i] == nil {
			gone = append(gone, i)
			delete(u.shards, i)
		}
	}
	for i, s := range out {
		u.shards[i] = true
		sort.Slice(s.Hosts, func(a, b int) bool { return s.Hosts[a].Host < s.Hosts[b].Host })
	}
	return out, gone
}

// publishSamples writes this server's usage samples every interval
// until ctx ends.
func (s *Server) publishSamples(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.writeSamples(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("writing usage samples failed", "err", err)
		}
	}
}

// writeSamples writes every shard of this server's samples, several to
// a transaction up to sampleTxnBytes.
func (s *Server) writeSamples(ctx context.Context) error {
	server := s.AgentAddr()
	shards, gone := s.hub.samples(server, s.now())
	var ops []store.Op
	size := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, _, err := s.repo.Txn(ctx, nil, ops)
		ops, size = nil, 0
		return err
	}
	for _, i := range gone {
		ops = append(ops, store.Delete(store.SampleKey(server, i)))
	}
	keys := make([]int, 0, len(shards))
	for i := range shards {
		keys = append(keys, i)
	}
	sort.Ints(keys)
	for _, i := range keys {
		b, err := json.Marshal(shards[i])
		if err != nil {
			return err
		}
		if size+len(b) > sampleTxnBytes || len(ops) >= 100 {
			if err := flush(); err != nil {
				return err
			}
		}
		key := store.SampleKey(server, i)
		s.hub.noteWriting(key)
		ops = append(ops, store.Put(key, b))
		size += len(b)
	}
	return flush()
}

// HostUsage answers a host's latest measured usage, when the server last
// saw a heartbeat of it (its lease's last renewal) and the lease's TTL
// in seconds: from this server's memory when the host beats here, else
// from the freshest sample any server wrote. ok is false when no server
// has heard of it.
func (s *Server) HostUsage(host string) (u model.HostUsage, seen time.Time, ttl int, ok bool) {
	if h, live := s.hub.host(host); live {
		u, seen, ttl, ok = h.usage, h.seen, h.ttl, true
	}
	s.view.usage.read(func(x *sampleIndex) {
		if ref, found := x.hosts[host]; found {
			hs := ref.s.Hosts[ref.hi]
			if !ok || hs.Seen.After(seen) {
				u, seen, ttl, ok = hs.Usage, hs.Seen, hs.LeaseTTL, true
			}
		}
	})
	return u, seen, ttl, ok
}

// VMUsage answers a VM's latest measured usage (by project/name) and
// when it was reported, like HostUsage.
func (s *Server) VMUsage(key string) (u model.VMUsage, at time.Time, ok bool) {
	u, at, ok = s.hub.vm(key)
	s.view.usage.read(func(x *sampleIndex) {
		if ref, found := x.vms[key]; found {
			hs := ref.s.Hosts[ref.hi]
			if !ok || hs.Seen.After(at) {
				u, at, ok = hs.VMs[ref.vi].Usage, hs.Seen, true
			}
		}
	})
	return u, at, ok
}

// VMUsages answers VMUsage for each of keys at once (us[i], at[i]; at[i]
// zero when no server reported the VM), taking the hub's lock and the
// sample index's once: controller.VMUsageBatch, which the energy pass asks for
// every running VM.
func (s *Server) VMUsages(keys []string, us []model.VMUsage, at []time.Time) {
	for i := range at {
		at[i] = time.Time{}
	}
	s.hub.vmsInto(keys, us, at)
	s.view.usage.read(func(x *sampleIndex) {
		for i, key := range keys {
			if ref, found := x.vms[key]; found {
				hs := ref.s.Hosts[ref.hi]
				if at[i].IsZero() || hs.Seen.After(at[i]) {
					us[i], at[i] = hs.VMs[ref.vi].Usage, hs.Seen
				}
			}
		}
	})
}

// withUsage overlays a host record with its measured usage and last
// heartbeat (the record keeps only what was true at its last write).
func (s *Server) withUsage(h *model.Host) {
	if u, seen, _, ok := s.HostUsage(h.Name); ok {
		h.Usage = u
		if seen.After(h.LastSeen) {
			h.LastSeen = seen
		}
	}
}

// vmWithUsage overlays a VM's status with its measured usage.
func (s *Server) vmWithUsage(v *model.VM) {
	if v.Status.Host == "" {
		return
	}
	if u, at, ok := s.VMUsage(v.Key()); ok && at.After(v.Status.ObservedAt) {
		v.Status.Usage, v.Status.ObservedAt = u, at
	}
}

// assignedIn marks, in mine (reused when large enough), the heartbeat's
// VM reports of VMs assigned to host: the usage the hub keeps.
func (s *Server) assignedIn(host string, reps []api.VMReport, mine []bool) []bool {
	mine = mine[:0]
	var buf [96]byte
	key := buf[:0]
	s.view.c.Read(func(int64) {
		on := s.view.onHost[host]
		for i := range reps {
			rep := &reps[i]
			ok := false
			if rep.Project != "" && rep.Name != "" {
				key = append(append(append(append(key[:0], store.VMsPrefix...), rep.Project...), '/'), rep.Name...)
				ok = on[string(key)] // store.VMKey, not made
			}
			mine = append(mine, ok)
		}
	})
	return mine
}
