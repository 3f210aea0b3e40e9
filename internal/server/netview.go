package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// netHub keeps, in memory, what the hosts' network views are made of:
// networks, security groups, the network side of VMs (host, NICs), the
// hosts' overlay addresses and the migrations under way. One watch per
// prefix feeds it; a change that matters to some view wakes every
// waiting agent, which recomputes its own view and answers when it
// differs. Heartbeats and usage reports rewrite hosts and VMs every few
// seconds: they wake nobody unless the network side changed.
type netHub struct {
	s    *Server
	once sync.Once

	mu     sync.Mutex
	ready  chan struct{}
	nets   map[string]*model.Network
	groups map[string]*model.SecurityGroup
	vms    map[string]vmNet
	hosts  map[string]model.HostNet
	migs   map[string]migNet
	wake   chan struct{}
}

type vmNet struct {
	project, name, host string
	nics                []model.NIC
	// listen is a balancer's port (lbview.go): its VIP is a port of the
	// network that accepts new connections to it.
	listen int
}

type migNet struct{ vm, target string }

func (v vmNet) same(o vmNet) bool {
	a, _ := json.Marshal(v.nics)
	b, _ := json.Marshal(o.nics)
	return v.host == o.host && v.listen == o.listen && string(a) == string(b)
}

// start runs the hub once, until the server drains.
func (h *netHub) start() {
	h.s.startView(&h.once, &h.ready, &h.wake, "network view", h.load, h.watch)
}

// startView runs a host-view hub (the networks', the balancers') once,
// until the server drains: it makes the hub's ready and wake channels,
// then loads the view and follows the store from the loaded revision,
// loading afresh whenever following ends; ready is closed after the
// first load.
func (s *Server) startView(once *sync.Once, ready, wake *chan struct{}, what string,
	load func(context.Context) (int64, error), follow func(context.Context, int64)) {
	once.Do(func() {
		*ready, *wake = make(chan struct{}), make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-s.drain; cancel() }()
		go func(ready chan struct{}) {
			first := true
			for ctx.Err() == nil {
				rev, err := load(ctx)
				if err != nil {
					s.log.Warn(what+": load", "err", err)
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
					continue
				}
				if first {
					close(ready)
					first = false
				}
				follow(ctx, rev)
			}
		}(*ready)
	})
}

// load reads every prefix afresh and returns the oldest revision read.
func (h *netHub) load(ctx context.Context) (int64, error) {
	st := h.s.cfg.Store
	nets, groups, vms := map[string]*model.Network{}, map[string]*model.SecurityGroup{}, map[string]vmNet{}
	hosts, migs := map[string]model.HostNet{}, map[string]migNet{}
	var rev int64
	for _, pfx := range netViewPrefixes {
		kvs, r, err := st.List(ctx, pfx)
		if err != nil {
			return 0, err
		}
		if rev == 0 || r < rev {
			rev = r
		}
		for _, kv := range kvs {
			applyKV(kv, false, nets, groups, vms, hosts, migs)
		}
	}
	h.mu.Lock()
	h.nets, h.groups, h.vms, h.hosts, h.migs = nets, groups, vms, hosts, migs
	h.changed()
	h.mu.Unlock()
	return rev, nil
}

// changed wakes the waiters; h.mu is held.
func (h *netHub) changed() {
	close(h.wake)
	h.wake = make(chan struct{})
}

func (h *netHub) watch(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan store.WatchResponse)
	for _, pfx := range netViewPrefixes {
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
				return // reload
			}
			h.mu.Lock()
			dirty := false
			for _, ev := range resp.Events {
				if applyKV(ev.KV, ev.Type == store.EventDelete, h.nets, h.groups, h.vms, h.hosts, h.migs) {
					dirty = true
				}
			}
			if dirty {
				h.changed()
			}
			h.mu.Unlock()
		}
	}
}

// applyKV folds one stored object into the maps and reports whether
// something a view shows changed.
func applyKV(kv store.KV, deleted bool, nets map[string]*model.Network, groups map[string]*model.SecurityGroup,
	vms map[string]vmNet, hosts map[string]model.HostNet, migs map[string]migNet) bool {
	k := kv.Key
	switch {
	case strings.HasPrefix(k, store.NetworksPrefix):
		id := strings.TrimPrefix(k, store.NetworksPrefix)
		if deleted {
			delete(nets, id)
			return true
		}
		if n, err := state.DecodeNetwork(kv); err == nil {
			nets[id] = n
		}
		return true
	case strings.HasPrefix(k, store.SecGroupsPrefix):
		id := strings.TrimPrefix(k, store.SecGroupsPrefix)
		if deleted {
			delete(groups, id)
			return true
		}
		if g, err := state.DecodeSecurityGroup(kv); err == nil {
			groups[id] = g
		}
		return true
	case strings.HasPrefix(k, store.VMsPrefix):
		id := strings.TrimPrefix(k, store.VMsPrefix)
		old, had := vms[id]
		if deleted {
			delete(vms, id)
			return had
		}
		v, err := state.DecodeVM(kv)
		if err != nil {
			return false
		}
		n := vmNet{project: v.Project, name: v.Name, host: v.Status.Host}
		for _, nic := range v.Spec.NICs {
			if nic.Network != "" {
				n.nics = append(n.nics, nic)
			}
		}
		if len(n.nics) == 0 {
			delete(vms, id)
			return had
		}
		vms[id] = n
		return !had || !old.same(n)
	case strings.HasPrefix(k, store.HostsPrefix):
		id := strings.TrimPrefix(k, store.HostsPrefix)
		old, had := hosts[id]
		if deleted {
			delete(hosts, id)
			return had
		}
		var hst model.Host
		if json.Unmarshal(kv.Value, &hst) != nil || hst.Net == nil {
			delete(hosts, id)
			return had
		}
		hosts[id] = *hst.Net
		return !had || old != *hst.Net
	case strings.HasPrefix(k, store.MigrationsPrefix):
		id := strings.TrimPrefix(k, store.MigrationsPrefix)
		_, had := migs[id]
		var m model.Migration
		if deleted || json.Unmarshal(kv.Value, &m) != nil || m.Phase == model.MigrationCompleted ||
			m.Phase == model.MigrationFailed || m.Phase == model.MigrationCancelled {
			delete(migs, id)
			return had
		}
		migs[id] = migNet{vm: m.Project + "/" + m.VM, target: m.Target}
		return !had
	case strings.HasPrefix(k, store.LBsPrefix):
		return applyLBPort(kv, deleted, vms)
	}
	return false
}

// view computes host's network view; h.mu is held.
func (h *netHub) view(host string) api.HostNetworks {
	out := api.HostNetworks{Networks: []api.NetworkView{}, NICs: []api.NICView{}, Groups: []api.GroupView{}}
	if hn, ok := h.hosts[host]; ok {
		c := hn
		out.Host = &c
	}
	local := map[string]bool{}
	for id, v := range h.vms {
		if v.host == host {
			local[id] = true
		}
	}
	for _, m := range h.migs {
		if m.target == host {
			if _, ok := h.vms[m.vm]; ok {
				local[m.vm] = true
			}
		}
	}
	needNets, needGroups := map[string]bool{}, map[string]bool{}
	for _, id := range sortedSet(local) {
		v := h.vms[id]
		for i, nic := range v.nics {
			nk := v.project + "/" + nic.Network
			n, ok := h.nets[nk]
			if !ok {
				continue
			}
			needNets[nk] = true
			nv := api.NICView{Project: v.project, VM: v.name, NIC: nic.Name, Index: i, Network: nic.Network, VNI: n.Status.VNI,
				MAC: nic.MAC, IP: nic.IP, Groups: nic.SecurityGroups, Listen: v.listen}
			if nic.QoS != nil {
				nv.QoS = *nic.QoS
			}
			out.NICs = append(out.NICs, nv)
			for _, g := range nic.SecurityGroups {
				needGroups[v.project+"/"+g] = true
			}
		}
	}
	for gk := range needGroups {
		if g, ok := h.groups[gk]; ok {
			for _, r := range g.Spec.Rules {
				if r.Group != "" {
					needGroups[g.Project+"/"+r.Group] = true
				}
			}
		}
	}
	for _, nk := range sortedSet(needNets) {
		out.Networks = append(out.Networks, h.networkView(h.nets[nk], host, local))
	}
	for _, gk := range sortedSet(needGroups) {
		project, name, _ := strings.Cut(gk, "/")
		gv := api.GroupView{Project: project, Name: name, Members: []string{}}
		if g, ok := h.groups[gk]; ok {
			gv.Rules = g.Spec.Rules
		}
		for _, v := range h.vms {
			if v.project != project {
				continue
			}
			for _, nic := range v.nics {
				if slices.Contains(nic.SecurityGroups, name) && nic.IP != "" {
					gv.Members = append(gv.Members, nic.IP)
				}
			}
		}
		sort.Strings(gv.Members)
		out.Groups = append(out.Groups, gv)
	}
	b, _ := json.Marshal(out)
	sum := sha256.Sum256(b)
	out.ETag = hex.EncodeToString(sum[:12])
	return out
}

// networkView says where the network's VMs on other hosts are.
func (h *netHub) networkView(n *model.Network, host string, local map[string]bool) api.NetworkView {
	nv := api.NetworkView{Project: n.Project, Name: n.Name, VNI: n.Status.VNI, Spec: n.Spec}
	remotes := map[string]bool{}
	for id, v := range h.vms {
		if v.project != n.Project || v.host == "" || v.host == host || local[id] && v.host == host {
			continue
		}
		hn, ok := h.hosts[v.host]
		if !ok || hn.Overlay == "" {
			continue
		}
		for _, nic := range v.nics {
			if nic.Network == n.Name && nic.MAC != "" {
				remotes[hn.Overlay] = true
				nv.FDB = append(nv.FDB, api.FDBEntry{MAC: nic.MAC, Host: hn.Overlay})
			}
		}
	}
	// A VM migrating here from another host is still there until it
	// switches over; one migrating away is still here.
	for _, m := range h.migs {
		v, ok := h.vms[m.vm]
		if !ok || v.project != n.Project || m.target == host {
			continue
		}
		if hn, ok := h.hosts[m.target]; ok && hn.Overlay != "" && v.host == host {
			for _, nic := range v.nics {
				if nic.Network == n.Name {
					remotes[hn.Overlay] = true
				}
			}
		}
	}
	nv.Remotes = sortedSet(remotes)
	sort.Slice(nv.FDB, func(i, j int) bool { return nv.FDB[i].MAC < nv.FDB[j].MAC })
	return nv
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// hostNetworks answers the calling host's network view; with etag=E it
// waits (up to wait, at most 60 s) until the view differs from E.
func (s *Server) hostNetworks(w http.ResponseWriter, r *http.Request, host string) error {
	h := &s.nets
	h.start()
	return s.pollView(w, r, "network view", h.ready, func() (any, string, <-chan struct{}) {
		h.mu.Lock()
		defer h.mu.Unlock()
		v := h.view(host)
		return v, v.ETag, h.wake
	})
}

// pollView answers a host's view (snap: the view, its ETag and the
// channel closed at its next change) once ready is closed; with etag=E
// it waits (up to wait, at most 60 s) until the view's ETag differs
// from E. What names the view in the error of a view not loaded yet.
func (s *Server) pollView(w http.ResponseWriter, r *http.Request, what string, ready <-chan struct{},
	snap func() (v any, etag string, wake <-chan struct{})) error {
	q := r.URL.Query()
	wait := 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fieldError("wait", "must be a duration like 30s, got %q", truncateStr(v, 40))
		}
		wait = min(d, 60*time.Second)
	}
	etag := q.Get("etag")
	ctx, cancel := s.streamContext(r)
	defer cancel()
	select {
	case <-ready:
	case <-ctx.Done():
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "%s not loaded yet; retry", what)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		v, tag, wake := snap()
		if etag == "" || tag != etag {
			writeJSON(w, http.StatusOK, v)
			return nil
		}
		select {
		case <-wake:
		case <-deadline.C:
			writeJSON(w, http.StatusOK, v)
			return nil
		case <-ctx.Done():
			writeJSON(w, http.StatusOK, v)
			return nil
		}
	}
}

// sweepAddresses frees, every interval, the addresses of NICs that are
// gone (a deleted VM, a removed NIC, a create that failed half way).
func (s *Server) sweepAddresses(ctx context.Context, interval, grace time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := s.repo.SweepAddresses(ctx, grace); err != nil && ctx.Err() == nil {
			s.log.Warn("address sweep", "err", err)
		} else if n > 0 {
			s.log.Info("released addresses of removed NICs", "count", n)
		}
	}
}
