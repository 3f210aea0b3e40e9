package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// A heartbeat renews the host's liveness lease (the alive key is
// attached to it: when beats stop, etcd deletes the key and the leader
// marks the host down) and hands its usage to the usage hub (usage.go).
// It writes the store only when something a decision reads changed: the
// host's inventory, its state (a new or down host becomes ready), a wake
// from standby, or a new lease (first beat, a beat after the lease
// expired, another server took the host). At rest, 10,000 hosts cost
// lease renewals (not writes) and one sample record per shard of hosts
// per UsageSampleInterval.

// hostLease is the liveness lease this server renews for a host.
type hostLease struct {
	id  store.LeaseID
	ttl int // seconds
	// putRev is the revision this server attached the alive key at: a
	// cache still behind it cannot tell whether the key is there.
	putRev int64
}

// heartbeatTiming returns the interval agents are told and the TTL of
// the leases granted now (beatpace.go): from the hosts of the whole
// control plane, this server's renewals' lag and the HA policy.
func (s *Server) heartbeatTiming(hp model.HAPolicy, host string) beatTiming {
	if iv := s.cfg.HeartbeatInterval; iv > 0 {
		return beatTiming{interval: iv, longest: iv, limit: 1,
			ttl: leaseTTL(iv, hp.Suspect(), hp.Fence(), hp.Margin())}
	}
	n := s.planeHosts(host)
	t := paceTiming(paceInput{hosts: n, budget: s.cfg.HeartbeatBudget, base: hp.Heartbeat(), suspect: hp.Suspect(),
		fence: hp.Fence(), margin: hp.Margin(), stretch: s.pace.factor()})
	if t.capped && s.fenceCapWarned.CompareAndSwap(false, true) && s.log != nil {
		s.log.Warn("the fence timeout caps the heartbeat interval: the hosts beat more often than the control plane was sized for; raise the HA policy's fenceMillis for a fleet this large (docs/scale.md)",
			"hosts", n, "interval", t.interval, "fence", hp.Fence())
	}
	return t
}

// planeHosts is how many hosts beat in the whole control plane, host
// among them: the alive keys in this server's view (every server's
// hosts), or the hosts this server renews when its view has not caught
// up.
func (s *Server) planeHosts(host string) int {
	n := 1
	if s.view != nil {
		s.view.c.Read(func(int64) {
			n = s.view.alive.Len()
			if s.view.alive.Get(store.AliveKey(host)) == nil {
				n++
			}
		})
	}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	m := len(s.leases)
	if _, ok := s.leases[host]; !ok {
		m++
	}
	return max(n, m)
}

// heartbeat renews the host's lease, writes its record only when its
// inventory or state changed (never its operator fields), and keeps its
// usage in memory.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, host string) error {
	hb, done, he := s.decodeHeartbeat(w, r)
	if he != nil {
		return he
	}
	defer done()
	if hb.Host != "" && hb.Host != host {
		return forbidden("certificate is for host %q, heartbeat names %q", host, hb.Host)
	}
	_, leaf, err := peerHost(r.TLS)
	if err != nil || leaf == nil {
		return unauthorized("a heartbeat needs the host's client certificate")
	}
	ctx := r.Context()
	serial := pki.SerialHex(leaf.SerialNumber)
	// refused before a lease is granted; a write checks again in its txn
	if err := s.trust.check(ctx, host, serial); errors.Is(err, state.ErrNotJoined) {
		// a host record from before bindings adopts this certificate
		if _, gerr := s.repo.GetHost(ctx, host); gerr != nil {
			return certRefused(host, err)
		}
	} else if err != nil {
		return certRefused(host, err)
	}
	if err := s.view.c.WaitSynced(ctx); err != nil {
		return err
	}
	hp := s.haPolicy(ctx)
	timing := s.heartbeatTiming(hp, host)
	ttl := timing.ttl
	t0 := s.now()
	alive, lease, lapsed, err := s.renewLease(ctx, host, ttl)
	if err != nil {
		_, _ = s.pace.observe(s.now(), 0, true, timing.interval, timing.limit)
		return err
	}
	now := s.now()
	stored := s.cachedHost(host)
	if len(alive) > 0 {
		// a new lease: the host was away (or beats to this server now);
		// decide on the stored record, not on a cache that may lag
		if stored, err = s.repo.GetHost(ctx, host); errors.Is(err, store.ErrNotFound) {
			stored, err = nil, nil
		}
		if err != nil {
			return err
		}
	}
	guard := s.repo.HeartbeatGuard(host, serial, leaf.NotAfter)
	switch {
	case needsWrite(stored, hb):
		hb.CloneInventory() // the record gets its own maps and slices, not the decoder's
		stored, err = s.repo.UpsertHostGuarded(ctx, host, guard, func(h *model.Host, exists bool) error {
			applyInventory(h, hb, now)
			if !exists || h.State == model.HostDown || h.State == "" {
				h.State = model.HostReady
			}
			return nil
		}, alive...)
		if err == nil && len(alive) > 0 {
			s.notePut(host, lease, stored.Revision)
		}
	case len(alive) > 0:
		err = s.attachAlive(ctx, host, stored, guard, alive, lease)
	}
	// the renewal's time, with the write a new lease or a change took
	if f, changed := s.pace.observe(s.now(), s.now().Sub(t0), lapsed || err != nil, timing.interval, timing.limit); changed && s.log != nil {
		s.log.Info("heartbeat interval stretch changed by the renewals' lag (docs/scale.md)", "stretch", f, "was", timing.interval)
	}
	if err != nil {
		return certRefused(host, err)
	}
	var mine [32]bool
	s.hub.beatReports(host, now, ttl, hb.Usage, hb.VMs, s.assignedIn(host, hb.VMs, mine[:0]))
	// The fence timeout is the policy's: agents self-fence after it
	// (docs/ha.md).
	interval := timing.interval
	resp := api.HeartbeatResponse{IntervalSeconds: max(1, int(interval/time.Second)), LeaseTTLSeconds: ttl,
		IntervalMillis: int(interval / time.Millisecond), FenceMillis: hp.FenceMillis, Accepts: heartbeatAccepts}
	if desiredPower(stored) == model.HostPowerStandby {
		resp.Power = model.HostPowerStandby
	}
	b, err := s.beatAnswers.encode(resp)
	if err != nil {
		return fmt.Errorf("server: encode a heartbeat answer: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return nil
}

// beatAnswers keeps the encoded heartbeat answers: every host of a
// server gets one of very few (they differ in the interval, TTL, fence
// and power only), which were encoded afresh a beat.
type beatAnswers struct {
	mu  sync.Mutex
	enc map[beatAnswerKey][]byte
}

type beatAnswerKey struct {
	interval, ttl, intervalMs, fenceMs int
	power                              string
}

// encode returns resp as writeJSON writes it (Accepts is always
// heartbeatAccepts); the bytes are shared: never changed.
func (b *beatAnswers) encode(resp api.HeartbeatResponse) ([]byte, error) {
	k := beatAnswerKey{resp.IntervalSeconds, resp.LeaseTTLSeconds, resp.IntervalMillis, resp.FenceMillis, resp.Power}
	b.mu.Lock()
	defer b.mu.Unlock()
	if out, ok := b.enc[k]; ok {
		return out, nil
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil, err
	}
	out = append(out, '\n') // as json.Encoder writes it
	if b.enc == nil || len(b.enc) >= 64 {
		b.enc = map[beatAnswerKey][]byte{}
	}
	b.enc[k] = out
	return out, nil
}

// heartbeatAccepts are the heartbeat bodies taken besides JSON.
var heartbeatAccepts = []string{api.HeartbeatCompactType}

// decodeHeartbeat reads a heartbeat in JSON or, by its Content-Type, in
// the compact form (api.HeartbeatCompactType): the usage in binary and
// the inventory decoded once per host and change (s.beats), into a
// pooled heartbeat whose VM reports' room is reused and whose inventory
// is the decoder's (read only: api.Heartbeat.CloneInventory before a
// change). done gives the heartbeat back once the handler no longer
// uses it.
func (s *Server) decodeHeartbeat(w http.ResponseWriter, r *http.Request) (*api.Heartbeat, func(), *httpError) {
	if r.Header.Get("Content-Type") != api.HeartbeatCompactType {
		var hb api.Heartbeat
		if he := decodeJSON(w, r, &hb); he != nil {
			return nil, nil, he
		}
		return &hb, func() {}, nil
	}
	body, he := readBody(w, r)
	if he != nil {
		return nil, nil, he
	}
	hb := beatPool.Get().(*api.Heartbeat)
	if err := s.beats.DecodeShared(body, hb); err != nil {
		beatPool.Put(hb)
		return nil, nil, bodyError("%v", err)
	}
	return hb, func() { beatPool.Put(hb) }, nil
}

// beatPool holds decoded heartbeats for reuse (their VM reports: about
// 2 KiB a beat of 10 VMs, 1,000 beats a second at 10,000 hosts).
var beatPool = sync.Pool{New: func() any { return new(api.Heartbeat) }}

// cachedHost returns the host record as the cache holds it (nil when
// none): never changed by callers.
func (s *Server) cachedHost(name string) *model.Host {
	var h *model.Host
	s.view.c.Read(func(int64) {
		if it := s.view.hosts.Get(store.HostKey(name)); it != nil {
			h, _ = it.Obj.(*model.Host)
		}
	})
	return h
}

// attachAlive writes only the alive key on the host's new lease, in a
// transaction that holds the heartbeat's certificate check (on the
// stored host: the guard adopts a certificate for a host that exists).
func (s *Server) attachAlive(ctx context.Context, host string, stored *model.Host, guard state.HostGuard, alive []store.Op, lease store.LeaseID) error {
	if stored == nil {
		return state.ErrNotJoined
	}
	conds, ops, err := guard(ctx, stored)
	if err != nil {
		return err
	}
	ok, rev, err := s.repo.Txn(ctx, conds, append(ops, alive...))
	if err != nil {
		return err
	}
	if !ok {
		return state.ErrCertRevoked
	}
	s.notePut(host, lease, rev)
	return nil
}

// needsWrite says whether a heartbeat must write the host's record: a
// new host, a changed inventory, a down (or stateless) host coming back,
// or a host waking from standby whose wake the power controller waits
// to see (LastSeen after Power.Since).
func needsWrite(h *model.Host, hb *api.Heartbeat) bool {
	if h == nil || h.State == model.HostDown || h.State == "" {
		return true
	}
	if h.Power != nil && h.Power.Desired == model.HostPowerOn && !h.LastSeen.After(h.Power.Since) {
		return true
	}
	return !beatKeepsInventory(h, hb)
}

// beatKeepsInventory says whether applyInventory(h, hb) would leave what
// sameInventory compares as it is, without applying it to a copy of h
// (a copy of its labels a beat).
func beatKeepsInventory(h *model.Host, hb *api.Heartbeat) bool {
	for k := range hb.Labels {
		if _, set := h.Labels[k]; !set {
			return false // applyInventory adds it
		}
	}
	return h.Capacity == hb.Capacity && h.Driver == hb.Driver && h.Accel == hb.Accel && slices.Equal(h.Pools, hb.Pools) &&
		h.Address == hb.Address && h.AgentVer == hb.Version && h.CPUModel == hb.CPUModel &&
		h.HypervisorVersion == hb.HypervisorVersion && slices.Equal(h.Networks, hb.Networks) &&
		sameHostNet(h.Net, hb.Net) && h.MachineType == hb.MachineType
}

// applyInventory copies what the agent reports about its host into h;
// labels the agent reports are added, never changed (the operator's win).
func applyInventory(h *model.Host, hb *api.Heartbeat, now time.Time) {
	h.Capacity, h.Driver, h.Accel, h.Pools = hb.Capacity, hb.Driver, hb.Accel, hb.Pools
	h.Address, h.AgentVer, h.Usage, h.LastSeen = hb.Address, hb.Version, hb.Usage, now
	h.CPUModel, h.HypervisorVersion, h.Networks = hb.CPUModel, hb.HypervisorVersion, hb.Networks
	h.Net = hb.Net
	h.MachineType = hb.MachineType
	for k, v := range hb.Labels {
		if _, set := h.Labels[k]; !set {
			if h.Labels == nil {
				h.Labels = map[string]string{}
			}
			h.Labels[k] = v
		}
	}
}

// sameInventory compares what applyInventory sets, usage and LastSeen
// aside (they live in the usage hub).
func sameInventory(a, b *model.Host) bool {
	return a.Capacity == b.Capacity && a.Driver == b.Driver && a.Accel == b.Accel && slices.Equal(a.Pools, b.Pools) &&
		a.Address == b.Address && a.AgentVer == b.AgentVer && a.CPUModel == b.CPUModel &&
		a.HypervisorVersion == b.HypervisorVersion && slices.Equal(a.Networks, b.Networks) &&
		sameHostNet(a.Net, b.Net) && a.MachineType == b.MachineType && maps.Equal(a.Labels, b.Labels)
}

func sameHostNet(a, b *model.HostNet) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// renewLease keeps the host's liveness lease alive and returns the op
// that attaches the alive key when it must be written. The lease is the
// one the alive key is attached to, whichever server granted it (a host
// that moves to this server, or a restarted server, renews the lease it
// has: no new lease, no expiry storm); a new one is granted when there
// is none, it expired, or its TTL is shorter than ttl. A lease the cache
// shows expired (its key gone) is not renewed first: etcd answers such a
// renewal only once it has applied everything, slow under load. lapsed:
// a lease this server renewed had expired (the beats came too late).
func (s *Server) renewLease(ctx context.Context, host string, ttl int) ([]store.Op, store.LeaseID, bool, error) {
	s.leaseMu.Lock()
	l, ok := s.leases[host]
	s.leaseMu.Unlock()
	cur, curTTL, behind := s.aliveLease(host, l)
	lapsed := false
	switch {
	case ok && behind && l.ttl >= ttl:
		cur, curTTL = l.id, l.ttl // our own write is on its way to the cache
	case cur != 0 && curTTL < ttl:
		cur = 0 // too short for the interval now
	case cur == 0 && ok && !behind:
		lapsed = true
	}
	if cur != 0 {
		err := s.cfg.Store.KeepAlive(ctx, cur)
		if err == nil {
			if !ok || l.id != cur {
				s.leaseMu.Lock()
				s.leases[host] = hostLease{id: cur, ttl: curTTL}
				s.leaseMu.Unlock()
			}
			return nil, cur, false, nil
		}
		if !errors.Is(err, store.ErrNoLease) {
			return nil, 0, false, err
		}
		lapsed = true
	}
	id, err := s.cfg.Store.Grant(ctx, int64(ttl))
	if err != nil {
		return nil, 0, lapsed, err
	}
	s.leaseMu.Lock()
	s.leases[host] = hostLease{id: id, ttl: ttl}
	s.leaseMu.Unlock()
	rec, _ := json.Marshal(model.AliveRecord{Server: s.Addr(), LeaseTTL: ttl})
	return []store.Op{store.PutWithLease(store.AliveKey(host), rec, id)}, id, lapsed, nil
}

// aliveLease returns the lease the host's alive key is attached to, as
// far as the cache knows, with its TTL (0 when there is no key); behind:
// the cache has not seen this server's last write of the key yet.
func (s *Server) aliveLease(host string, l hostLease) (store.LeaseID, int, bool) {
	var id store.LeaseID
	ttl, behind := 0, false
	s.view.c.Read(func(rev int64) {
		if l.putRev > 0 && rev < l.putRev {
			behind = true
			return
		}
		if it := s.view.alive.Get(store.AliveKey(host)); it != nil {
			id, ttl = it.Lease, int(LeaseTTL/time.Second)
			if rec, ok := it.Obj.(*model.AliveRecord); ok && rec.LeaseTTL > 0 {
				ttl = rec.LeaseTTL
			}
		}
	})
	return id, ttl, behind
}

// notePut records the revision the alive key was attached to lease at.
func (s *Server) notePut(host string, lease store.LeaseID, rev int64) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if l, ok := s.leases[host]; ok && l.id == lease {
		l.putRev = rev
		s.leases[host] = l
	}
}
