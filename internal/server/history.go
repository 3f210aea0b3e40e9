package server

import (
	"context"
	"errors"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/watchcache"
)

// The dashboard's utilisation charts: every server samples the hosts'
// measured load and draw into a ring of api.MaxHistory samples in its
// memory (a restart starts again; nothing is written to the store).

// DefaultHistoryInterval is how often the hosts are sampled.
const DefaultHistoryInterval = 10 * time.Second

// history is the ring, kept by column: a sample at 10,000 hosts was
// 10,000 api.HostSample structs with their own copies of each host's
// name and state (about 110 bytes a host: 0.75 GiB for a full ring);
// now a sample holds only what changes between samples (29 bytes a
// host) and shares the hosts' names and capacities with the sample
// before it while those stay the same (docs/scale.md, sixth round).
type history struct {
	mu      sync.Mutex
	samples []histSample // ring, oldest first once full
	next    int
	full    bool
	states  []model.HostState // interned: histSample.state indexes it
	stateIx map[model.HostState]uint16
	// energy is the hosts' power as the energy ledger last stored it
	energy ledgerWatts
}

// ledgerWatts keeps each host's power from the energy ledger, read again
// only once the ledger's header moved: a persist (every minute) writes
// the header last, after every shard. Reading and decoding the whole
// ledger at every sample (every 10 s; every VM's energy, 100,000 at
// 10,000 hosts) was 3 % of a server's CPU at rest (docs/scale.md, eighth
// round). A persist cut short leaves its shards unseen here until the
// next persist's header.
type ledgerWatts struct {
	mu     sync.Mutex
	rev    int64 // the header's revision read with byHost (0: none yet)
	byHost map[string]float64
}

// watts returns each host's power as the ledger stores it (shared: read
// only).
func (lw *ledgerWatts) watts(ctx context.Context, repo *state.Repo) (map[string]float64, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	rev := int64(0)
	switch kv, err := repo.Store().Get(ctx, store.EnergyMetaKey); {
	case err == nil:
		rev = kv.ModRev
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	if rev != 0 && rev == lw.rev {
		return lw.byHost, nil
	}
	hosts, err := repo.EnergyHosts(ctx)
	if err != nil {
		return nil, err
	}
	byHost := make(map[string]float64, len(hosts))
	for h, hr := range hosts {
		byHost[h] = hr.Watts
	}
	lw.rev, lw.byHost = rev, byHost
	return byHost, nil
}

// histHosts is the part of a sample that rarely changes: which hosts,
// in order, and their capacities.
type histHosts struct {
	names  []string
	cpus   []int
	memCap []model.Bytes
}

// histSample is one api.HistorySample by column.
type histSample struct {
	at      time.Time
	hosts   *histHosts
	state   []uint16 // into history.states
	cpuPct  []float64
	memUsed []model.Bytes
	watts   []float64
	vms     []int32
}

// same reports whether hs lists smp's hosts with the same capacities.
func (hs *histHosts) same(smp api.HistorySample) bool {
	if hs == nil || len(hs.names) != len(smp.Hosts) {
		return false
	}
	for i, h := range smp.Hosts {
		if hs.names[i] != h.Host || hs.cpus[i] != h.CPUs || hs.memCap[i] != h.MemCapacity {
			return false
		}
	}
	return true
}

func (h *history) add(smp api.HistorySample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(smp.Hosts)
	c := histSample{at: smp.Time, state: make([]uint16, n), cpuPct: make([]float64, n),
		memUsed: make([]model.Bytes, n), watts: make([]float64, n), vms: make([]int32, n)}
	if prev := h.newest(); prev != nil && prev.hosts.same(smp) {
		c.hosts = prev.hosts
	} else {
		c.hosts = &histHosts{names: make([]string, n), cpus: make([]int, n), memCap: make([]model.Bytes, n)}
		for i, hs := range smp.Hosts {
			c.hosts.names[i], c.hosts.cpus[i], c.hosts.memCap[i] = hs.Host, hs.CPUs, hs.MemCapacity
		}
	}
	for i, hs := range smp.Hosts {
		c.state[i] = h.intern(hs.State)
		c.cpuPct[i], c.memUsed[i], c.watts[i], c.vms[i] = hs.CPUPercent, hs.MemUsed, hs.Watts, int32(hs.VMs)
	}
	if len(h.samples) < api.MaxHistory {
		h.samples = append(h.samples, c)
		return
	}
	h.samples[h.next] = c
	h.next = (h.next + 1) % api.MaxHistory
	h.full = true
}

// newest is the last sample added, or nil (h.mu held).
func (h *history) newest() *histSample {
	switch {
	case len(h.samples) == 0:
		return nil
	case h.full:
		return &h.samples[(h.next+len(h.samples)-1)%len(h.samples)]
	}
	return &h.samples[len(h.samples)-1]
}

// intern returns st's index in h.states (h.mu held).
func (h *history) intern(st model.HostState) uint16 {
	if i, ok := h.stateIx[st]; ok {
		return i
	}
	if h.stateIx == nil {
		h.stateIx = map[model.HostState]uint16{}
	}
	if len(h.states) > math.MaxUint16 {
		return 0 // not a state any host has; the first one seen stands in
	}
	i := uint16(len(h.states))
	h.states, h.stateIx[st] = append(h.states, st), i
	return i
}

// last returns up to n samples (n ≤ 0: all), oldest first, with every
// host, or only the host named (host != ""; then a sample without it has
// no hosts: nil).
func (h *history) last(n int, host string) []api.HistorySample {
	h.mu.Lock()
	defer h.mu.Unlock()
	ordered := h.samples
	if h.full {
		ordered = append(append([]histSample(nil), h.samples[h.next:]...), h.samples[:h.next]...)
	}
	if n > 0 && len(ordered) > n {
		ordered = ordered[len(ordered)-n:]
	}
	out := make([]api.HistorySample, len(ordered))
	for i := range ordered {
		out[i] = h.expand(&ordered[i], host)
	}
	return out
}

// expand rebuilds one api.HistorySample (h.mu held).
func (h *history) expand(c *histSample, host string) api.HistorySample {
	out := api.HistorySample{Time: c.at}
	one := func(i int) api.HostSample {
		return api.HostSample{Host: c.hosts.names[i], State: h.states[c.state[i]], CPUs: c.hosts.cpus[i], CPUPercent: c.cpuPct[i],
			MemUsed: c.memUsed[i], MemCapacity: c.hosts.memCap[i], Watts: c.watts[i], VMs: int(c.vms[i])}
	}
	if host != "" {
		for i, name := range c.hosts.names {
			if name == host {
				out.Hosts = append(out.Hosts, one(i))
			}
		}
		return out
	}
	out.Hosts = make([]api.HostSample, len(c.hosts.names))
	for i := range c.hosts.names {
		out.Hosts[i] = one(i)
	}
	return out
}

// sampleHosts takes one sample of every host, from the server's view
// (after one small linearizable read: as fresh as the store) instead of
// listing and decoding every host record from the store every 10 s (at
// 10,000 hosts a third of a second of CPU each time).
func (s *Server) sampleHosts(ctx context.Context) (api.HistorySample, error) {
	if _, err := s.view.consistent(ctx); err != nil {
		return api.HistorySample{}, err
	}
	var hosts []*model.Host
	s.view.c.Read(func(int64) {
		hosts = make([]*model.Host, 0, s.view.hosts.Len())
		s.view.hosts.Each(store.HostsPrefix, "", func(it *watchcache.Item) bool {
			if h, ok := it.Obj.(*model.Host); ok {
				hosts = append(hosts, h) // shared: read only
			}
			return true
		})
	})
	watts, err := s.hist.energy.watts(ctx, s.repo)
	if err != nil {
		return api.HistorySample{}, err
	}
	out := api.HistorySample{Time: s.now().UTC(), Hosts: make([]api.HostSample, 0, len(hosts))}
	for _, h := range hosts {
		// heartbeats keep usage in memory and samples, not in host records
		usage := h.Usage
		if u, _, _, ok := s.HostUsage(h.Name); ok {
			usage = u
		}
		out.Hosts = append(out.Hosts, api.HostSample{Host: h.Name, State: h.State, CPUs: h.Capacity.CPUs, CPUPercent: usage.CPUPercent,
			MemUsed: usage.MemoryUsed, MemCapacity: h.Capacity.Memory, Watts: watts[h.Name], VMs: h.VMs})
	}
	return out, nil
}

// runHistory samples every interval until ctx ends.
func (s *Server) runHistory(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if smp, err := s.sampleHosts(ctx); err == nil {
			s.hist.add(smp)
		} else if ctx.Err() == nil {
			s.log.Debug("history sample failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) historyEndpoints() []endpoint {
	return []endpoint{{method: "GET", path: "/api/v1/cluster/history", handle: s.clusterHistory, resp: api.ClusterHistory{}, status: 200,
		query: []string{"host", "points"}}}
}

// clusterHistory answers the hosts' recent load (admins: tenants are not
// shown hosts' measured load).
func (s *Server) clusterHistory(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	n, err := queryInt(r, "points", api.MaxHistory, api.MaxHistory)
	if err != nil {
		return err
	}
	samples := s.hist.last(int(n), r.URL.Query().Get("host"))
	if len(samples) == 0 {
		samples = []api.HistorySample{}
	}
	writeJSON(w, http.StatusOK, api.ClusterHistory{IntervalSeconds: s.cfg.HistoryInterval.Seconds(), Samples: samples})
	return nil
}
