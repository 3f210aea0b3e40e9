package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// lbAgentEndpoints serve the hosts that run load balancers.
func (s *Server) lbAgentEndpoints() []agentEndpoint {
	return []agentEndpoint{
		{method: "GET", path: "/agent/v1/balancers", handle: s.hostBalancers, needCert: true, resp: api.HostBalancers{}, status: 200, query: []string{"etag", "wait"}},
		{method: "PUT", path: "/agent/v1/balancers/{project}/{name}/status", handle: s.balancerStatus, needCert: true, req: api.BalancerReport{}, resp: model.LoadBalancer{}, status: 200},
	}
}

// lbHub keeps the balancers and networks in memory, fed by one watch
// per prefix; a change wakes the agents long-polling their balancers.
type lbHub struct {
	s    *Server
	once sync.Once

	mu    sync.Mutex
	ready chan struct{}
	lbs   map[string]*model.LoadBalancer
	nets  map[string]*model.Network
	wake  chan struct{}
}

func (h *lbHub) start() {
	h.s.startView(&h.once, &h.ready, &h.wake, "balancer view", h.load, h.follow)
}

func (h *lbHub) load(ctx context.Context) (int64, error) {
	lbs, nets := map[string]*model.LoadBalancer{}, map[string]*model.Network{}
	var rev int64
	for _, pfx := range []string{store.LBsPrefix, store.NetworksPrefix} {
		kvs, r, err := h.s.cfg.Store.List(ctx, pfx)
		if err != nil {
			return 0, err
		}
		if rev == 0 || r < rev {
			rev = r
		}
		for _, kv := range kvs {
			applyLBKV(kv, false, lbs, nets)
		}
	}
	h.mu.Lock()
	h.lbs, h.nets = lbs, nets
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
	return rev, nil
}

func (h *lbHub) follow(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan store.WatchResponse)
	for _, pfx := range []string{store.LBsPrefix, store.NetworksPrefix} {
		go func() {
			for resp := range h.s.cfg.Store.Watch(wctx, pfx, rev+1) {
				select {
				case events <- resp:
				case <-wctx.Done():
					return
				}
			}
			select {
			case events <- store.WatchResponse{Err: store.ErrClosed}:
			case <-wctx.Done():
			}
		}()
	}
	for {
		select {
		case <-wctx.Done():
			return
		case resp := <-events:
			if resp.Err != nil {
				return
			}
			h.mu.Lock()
			for _, ev := range resp.Events {
				applyLBKV(ev.KV, ev.Type == store.EventDelete, h.lbs, h.nets)
			}
			close(h.wake)
			h.wake = make(chan struct{})
			h.mu.Unlock()
		}
	}
}

func applyLBKV(kv store.KV, deleted bool, lbs map[string]*model.LoadBalancer, nets map[string]*model.Network) {
	if id, ok := strings.CutPrefix(kv.Key, store.LBsPrefix); ok {
		if b, err := state.DecodeLB(kv); err == nil && !deleted {
			lbs[id] = b
		} else {
			delete(lbs, id)
		}
	} else if id, ok := strings.CutPrefix(kv.Key, store.NetworksPrefix); ok {
		if n, err := state.DecodeNetwork(kv); err == nil && !deleted {
			nets[id] = n
		} else {
			delete(nets, id)
		}
	}
}

// view is what host serves; h.mu is held.
func (h *lbHub) view(host string) api.HostBalancers {
	out := api.HostBalancers{Balancers: []api.BalancerView{}}
	keys := make([]string, 0, len(h.lbs))
	for k, b := range h.lbs {
		if b.Status.Host == host && b.DeletedAt == nil && b.Status.Phase == model.LBActive {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		b := h.lbs[k]
		n, ok := h.nets[b.Project+"/"+b.Spec.Network]
		if !ok {
			continue
		}
		out.Balancers = append(out.Balancers, api.BalancerView{Project: b.Project, Name: b.Name, Network: n.Name, VNI: n.Status.VNI,
			Subnet: n.Spec.Subnet, MTU: n.Spec.MTU, VIP: b.Status.VIP, MAC: b.Status.MAC, Listen: b.Spec.Listen, MemberPort: b.Spec.MemberPort,
			Algorithm: b.Spec.Algorithm, HealthCheck: b.Spec.HealthCheck, DrainTimeout: b.Spec.DrainTimeout,
			Members: append([]model.LBMember{}, b.Status.Members...)})
	}
	bs, _ := json.Marshal(out)
	sum := sha256.Sum256(bs)
	out.ETag = hex.EncodeToString(sum[:12])
	return out
}

// hostBalancers answers the calling host's balancers; with etag=E it
// waits (up to wait, at most 60 s) until the answer differs from E.
func (s *Server) hostBalancers(w http.ResponseWriter, r *http.Request, host string) error {
	h := &s.lbs
	h.start()
	return s.pollView(w, r, "balancer view", h.ready, func() (any, string, <-chan struct{}) {
		h.mu.Lock()
		defer h.mu.Unlock()
		v := h.view(host)
		return v, v.ETag, h.wake
	})
}

// balancerStatus records a host's report of a balancer it serves, with
// an event for each member whose health check result flipped.
func (s *Server) balancerStatus(w http.ResponseWriter, r *http.Request, host string) error {
	var rep api.BalancerReport
	if he := decodeJSON(w, r, &rep); he != nil {
		return he
	}
	if len(rep.Members) > 2*model.MaxLBMembers {
		return fieldError("members", "has %d entries, more than %d", len(rep.Members), 2*model.MaxLBMembers)
	}
	project, name := r.PathValue("project"), r.PathValue("name")
	now := s.now()
	b, err := s.repo.UpdateLB(r.Context(), project, name, func(b *model.LoadBalancer) ([]model.Event, error) {
		if b.Status.Host != host {
			return nil, conflict("load balancer %s/%s is not served by host %s", project, name, host)
		}
		var evs []model.Event
		var old map[string]model.LBMemberHealth
		if b.Status.Observed != nil {
			old = b.Status.Observed.Members
		}
		for _, m := range b.Status.Members {
			n, had := rep.Members[m.VM], old[m.VM]
			switch {
			case n.Health == "down" && had.Health != "down":
				evs = append(evs, model.Event{Time: now, Kind: "lb.member-down", Message: fmt.Sprintf("member %s (%s) of %s failed its health check: no new connections", m.VM, m.IP, name)})
			case n.Health == "up" && had.Health == "down":
				evs = append(evs, model.Event{Time: now, Kind: "lb.member-up", Message: fmt.Sprintf("member %s (%s) of %s passes its health check again", m.VM, m.IP, name)})
			}
		}
		if b.Status.Observed != nil && b.Status.Observed.Running == rep.Running && b.Status.Observed.Error == rep.Error &&
			maps.Equal(old, rep.Members) && now.Sub(b.Status.Observed.At) < 10*time.Second {
			return nil, state.ErrSkip
		}
		b.Status.Observed = &model.LBObserved{At: now, Host: host, Running: rep.Running, Error: truncateStr(rep.Error, 1024), Members: rep.Members}
		return evs, nil
	})
	if err != nil {
		return lbNotFound(err, project, name)
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}
