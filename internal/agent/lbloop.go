package agent

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/haproxy"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
)

// BalancerRunner serves load balancers on this host (*haproxy.Runner).
type BalancerRunner interface {
	Ensure(ctx context.Context, s haproxy.Spec) error
	Stats(ctx context.Context, id string) (map[string]haproxy.ServerStat, error)
	Running() []string
	Remove(ctx context.Context, id, port string) error
}

// balancerReportEvery bounds how long an unchanged report waits; health
// flips are reported within balancerPoll.
const (
	balancerPoll        = 250 * time.Millisecond
	balancerReportEvery = 10 * time.Second
)

// lbState is what the balancer loop keeps between passes.
type lbState struct {
	mu    sync.Mutex
	view  *api.HostBalancers
	sent  map[string]string    // id → signature of the last report
	at    map[string]time.Time // id → when it was sent
	errs  map[string]string    // id → the last Ensure error
	ports map[string]string    // id → its veth on the bridge
}

// balancersLoop long-polls the balancers placed on this host, serves
// them through the runner (HAProxy in a namespace on the network's
// bridge), and reports their members' health and connections.
func (a *Agent) balancersLoop(ctx context.Context) {
	st := &lbState{sent: map[string]string{}, at: map[string]time.Time{}, errs: map[string]string{}, ports: map[string]string{}}
	views := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		etag, fails := "", 0
		for ctx.Err() == nil {
			var v api.HostBalancers
			path := fmt.Sprintf("%s/balancers?wait=%s&etag=%s", api.AgentPrefix, a.cfg.PollWait, url.QueryEscape(etag))
			if err := a.client.do(ctx, http.MethodGet, path, nil, &v); err != nil {
				if ctx.Err() != nil {
					return
				}
				fails++
				a.log.Warn("balancer view", "err", err)
				sleepCtx(ctx, retryDelay(fails))
				continue
			}
			fails, etag = 0, v.ETag
			st.mu.Lock()
			st.view = &v
			st.mu.Unlock()
			select {
			case views <- struct{}{}:
			default:
			}
		}
	})
	tick := time.NewTicker(balancerPoll)
	defer tick.Stop()
	applied := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-views:
		case <-tick.C:
		}
		st.mu.Lock()
		v := st.view
		st.mu.Unlock()
		if v == nil {
			continue
		}
		// Apply on a new view, and again every few seconds (a bridge
		// that was not there, an HAProxy that died).
		if v.ETag != applied || time.Since(st.at[""]) > 2*time.Second {
			a.applyBalancers(ctx, st, v)
			applied, st.at[""] = v.ETag, time.Now()
		}
		a.reportBalancers(ctx, st, v)
	}
}

// lbSpec turns a view into the runner's spec.
func (a *Agent) lbSpec(b api.BalancerView) (haproxy.Spec, error) {
	vip, err := netip.ParseAddr(b.VIP)
	if err != nil {
		return haproxy.Spec{}, fmt.Errorf("agent: balancer %s/%s: address %q: %w", b.Project, b.Name, b.VIP, err)
	}
	sub, err := netip.ParsePrefix(b.Subnet)
	if err != nil {
		return haproxy.Spec{}, fmt.Errorf("agent: balancer %s/%s: subnet %q: %w", b.Project, b.Name, b.Subnet, err)
	}
	s := haproxy.Spec{ID: b.Project + "/" + b.Name, VNI: b.VNI, Subnet: sub, MTU: b.MTU, MAC: b.MAC, VIP: vip,
		Port: netvirt.TapName(a.cfg.HostName, b.Project, "lb/"+b.Name, "vip"), Listen: b.Listen, MemberPort: b.MemberPort,
		Algorithm: b.Algorithm, Check: b.HealthCheck, Drain: time.Duration(b.DrainTimeout) * time.Second}
	for _, m := range b.Members {
		ip, err := netip.ParseAddr(m.IP)
		if err != nil {
			continue
		}
		s.Members = append(s.Members, haproxy.Member{Name: m.VM, IP: ip, Draining: m.State == model.MemberDraining})
	}
	return s, nil
}

func (a *Agent) applyBalancers(ctx context.Context, st *lbState, v *api.HostBalancers) {
	r := a.cfg.Net.Balancers
	want := map[string]bool{}
	for _, b := range v.Balancers {
		s, err := a.lbSpec(b)
		if err == nil {
			want[s.ID] = true
			st.ports[s.ID] = s.Port
			err = r.Ensure(ctx, s)
		}
		msg := ""
		if err != nil {
			msg = err.Error()
			a.log.Warn("serving a load balancer", "lb", b.Project+"/"+b.Name, "err", err)
		}
		st.errs[b.Project+"/"+b.Name] = msg
	}
	for _, id := range r.Running() {
		if want[id] {
			continue
		}
		if err := r.Remove(ctx, id, st.ports[id]); err != nil {
			a.log.Warn("removing a load balancer", "lb", id, "err", err)
		}
		project, name, _ := strings.Cut(id, "/")
		// Tell the server this host stopped serving it (a deletion
		// finishes on it; a balancer moved away answers 409).
		_ = a.client.do(ctx, http.MethodPut, fmt.Sprintf("%s/balancers/%s/%s/status", api.AgentPrefix, project, name), api.BalancerReport{}, nil)
		delete(st.sent, id)
		delete(st.errs, id)
		a.log.Info("load balancer removed", "lb", id)
	}
}

// reportBalancers sends a balancer's report when its members' health,
// draining or idleness changed, or every balancerReportEvery.
func (a *Agent) reportBalancers(ctx context.Context, st *lbState, v *api.HostBalancers) {
	for _, b := range v.Balancers {
		id := b.Project + "/" + b.Name
		rep := api.BalancerReport{Running: true, Error: st.errs[id], Members: map[string]model.LBMemberHealth{}}
		stats, err := a.cfg.Net.Balancers.Stats(ctx, id)
		if err != nil {
			rep.Running = false
			if rep.Error == "" {
				rep.Error = err.Error()
			}
		}
		draining := map[string]bool{}
		for _, m := range b.Members {
			draining[m.VM] = m.State == model.MemberDraining
		}
		var sig []string
		for _, name := range slices.Sorted(maps.Keys(stats)) {
			s := stats[name]
			h := model.LBMemberHealth{Health: s.Health, Sessions: s.Sessions, Draining: draining[name] && s.Weight == 0}
			rep.Members[name] = h
			sig = append(sig, fmt.Sprintf("%s=%s/%v/%v", name, h.Health, h.Draining, h.Draining && h.Sessions > 0))
		}
		key := fmt.Sprintf("%v|%s|%s", rep.Running, rep.Error, strings.Join(sig, ","))
		if st.sent[id] == key && time.Since(st.at[id]) < balancerReportEvery {
			continue
		}
		path := fmt.Sprintf("%s/balancers/%s/%s/status", api.AgentPrefix, b.Project, b.Name)
		if err := a.client.do(ctx, http.MethodPut, path, rep, nil); err != nil {
			a.log.Warn("balancer report", "lb", id, "err", err)
			continue
		}
		st.sent[id], st.at[id] = key, time.Now()
	}
}
