package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
)

// The dashboard's utilisation charts: every server samples the hosts'
// measured load and draw into a ring of api.MaxHistory samples in its
// memory (a restart starts again; nothing is written to the store).

// DefaultHistoryInterval is how often the hosts are sampled.
const DefaultHistoryInterval = 10 * time.Second

type history struct {
	mu      sync.Mutex
	samples []api.HistorySample // ring, oldest first once full
	next    int
	full    bool
}

func (h *history) add(s api.HistorySample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) < api.MaxHistory {
		h.samples = append(h.samples, s)
		return
	}
	h.samples[h.next] = s
	h.next = (h.next + 1) % api.MaxHistory
	h.full = true
}

// last returns up to n samples, oldest first.
func (h *history) last(n int) []api.HistorySample {
	h.mu.Lock()
	defer h.mu.Unlock()
	ordered := h.samples
	if h.full {
		ordered = append(append([]api.HistorySample(nil), h.samples[h.next:]...), h.samples[:h.next]...)
	}
	if n > 0 && len(ordered) > n {
		ordered = ordered[len(ordered)-n:]
	}
	return append([]api.HistorySample(nil), ordered...)
}

// sampleHosts takes one sample of every host.
func (s *Server) sampleHosts(ctx context.Context) (api.HistorySample, error) {
	hosts, _, err := s.repo.ListHosts(ctx)
	if err != nil {
		return api.HistorySample{}, err
	}
	energy, err := s.repo.EnergyHosts(ctx)
	if err != nil {
		return api.HistorySample{}, err
	}
	watts := make(map[string]float64, len(energy))
	for h, rec := range energy {
		watts[h] = rec.Watts
	}
	out := api.HistorySample{Time: s.now().UTC(), Hosts: make([]api.HostSample, 0, len(hosts))}
	for _, h := range hosts {
		s.withUsage(h) // heartbeats keep usage in memory and samples, not in host records
		out.Hosts = append(out.Hosts, api.HostSample{Host: h.Name, State: h.State, CPUs: h.Capacity.CPUs, CPUPercent: h.Usage.CPUPercent,
			MemUsed: h.Usage.MemoryUsed, MemCapacity: h.Capacity.Memory, Watts: watts[h.Name], VMs: h.VMs})
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
	host := r.URL.Query().Get("host")
	samples := s.hist.last(int(n))
	if host != "" {
		for i := range samples {
			var keep []api.HostSample
			for _, hs := range samples[i].Hosts {
				if hs.Host == host {
					keep = append(keep, hs)
				}
			}
			samples[i].Hosts = keep
		}
	}
	if samples == nil {
		samples = []api.HistorySample{}
	}
	writeJSON(w, http.StatusOK, api.ClusterHistory{IntervalSeconds: s.cfg.HistoryInterval.Seconds(), Samples: samples})
	return nil
}
