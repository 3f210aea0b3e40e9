package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// cache mirrors the keys the controllers act on. It is filled by one
// reflector per prefix (list at revision R, watch from R+1, re-list when
// the watch breaks or is compacted). Every entry keeps the ModRev it was
// read at; an update older than what is cached is ignored, so local
// updates after a commit and the watch events of that commit commute.
//
// Cached objects are immutable: updates replace pointers, and readers
// copy before changing anything.
//
// Each control loop subscribes to the prefixes it acts on and is poked
// (without blocking, coalesced) when one changes. The gate keeps its own
// journal of the hosts whose host or allocation record changed.
type cache struct {
	log *slog.Logger
	// usage overlays measured usage on the hosts hostView and snapshot
	// hand out (nil: the records' own).
	usage UsageView
	// dec decodes VMs, sharing each decode with the server's view (nil:
	// decode alone)
	dec *state.VMDecoder
	// subs maps a prefix to the kick channels of the loops that follow it.
	subs map[string][]chan struct{}
	// lateMu guards late: kicks subscribed after the reflectors started
	// (the migration controller's, follow).
	lateMu sync.Mutex
	late   map[string][]chan struct{}

	mu  sync.Mutex
	vms map[string]*model.VM // by "project/name"
	// created is each VM key's create revision: VMs created by one request
	// (one transaction) share it, which is how a batch is recognised.
	created map[string]int64
	hosts   map[string]*model.Host // by name
	allocs  map[string]model.Allocation
	alive   map[string]int64 // host name → ModRev of its liveness key
	// aliveTTL is the lease TTL (seconds) the host's alive record names
	// (model.AliveRecord; 0: unknown). Kept after the key is deleted: HA
	// reads it to bound the host's last renewal (ha.go).
	aliveTTL map[string]int
	policy   model.Policy
	polRev   int64
	// gen bumps whenever capacity may have changed (hosts, allocations,
	// liveness, policy): a VM that did not fit at gen g is not retried
	// until gen moves.
	gen uint64
	// gateJ and schedJ name the hosts whose host or allocation record
	// changed since the gate, and the scheduling loop's view, last synced
	// (journal).
	gateJ, schedJ journal
	// pending holds the VMs that need placement (needsPlacement), so
	// that a pass does not walk every VM.
	pending map[string]*model.VM
	// deleting holds the VMs marked deleted (cleanup), runningOn the
	// running VMs of each host (energy): kept by setVM and dropVM so
	// that the passes that need them do not walk every VM.
	deleting  map[string]*model.VM
	runningOn map[string]map[string]*model.VM
	// runningSorted is runningOn's hosts' VMs oldest first with their
	// keys, kept until the host's set changes (at rest the energy pass
	// sorts nothing and makes no key).
	runningSorted map[string][]runningVM
	// hostsByName is c.hosts sorted by name, nil after any change
	// (hostView sorts only when the hosts changed).
	hostsByName []*model.Host
	// liveJ names the hosts whose record or alive key changed since the
	// liveness pass last took it (all: a re-list); fenced indexes the
	// hosts in state fenced. Host HA reads them (ha.go), so that its
	// pass every 100 ms costs what changed, not what exists.
	liveJ  journal
	fenced map[string]*model.Host
	// through is the revision through which each prefix is complete:
	// its listing's, then the last event of each watch response (a
	// response covers whole revisions). The repair reads it (reconcile.go).
	through map[string]int64
}

// journal names hosts whose host or allocation record changed since its
// reader last synced; all asks the reader to rebuild (a re-list, a host
// deleted, a new policy).
type journal struct {
	dirty map[string]bool
	all   bool
}

// take returns the dirty hosts and whether to rebuild, and empties the
// journal (c.mu held).
func (j *journal) take() (map[string]bool, bool) {
	d, all := j.dirty, j.all
	if len(d) == 0 && !all {
		return nil, false
	}
	// a new map, not clear(): ranging a cleared big map still walks its table
	j.dirty, j.all = map[string]bool{}, false
	return d, all
}

// mark records a changed host in every journal (c.mu held).
func (c *cache) mark(host string) {
	c.gateJ.dirty[host] = true
	c.schedJ.dirty[host] = true
}

// markAll asks every journal's reader to rebuild (c.mu held).
func (c *cache) markAll() {
	c.gateJ.all, c.schedJ.all = true, true
}

func newCache(log *slog.Logger) *cache {
	return &cache{
		log:     log,
		subs:    map[string][]chan struct{}{},
		gateJ:   journal{dirty: map[string]bool{}},
		schedJ:  journal{dirty: map[string]bool{}},
		liveJ:   journal{dirty: map[string]bool{}},
		fenced:  map[string]*model.Host{},
		pending: map[string]*model.VM{},
		vms:     map[string]*model.VM{},

		deleting:      map[string]*model.VM{},
		runningOn:     map[string]map[string]*model.VM{},
		runningSorted: map[string][]runningVM{},
		created:       map[string]int64{},
		hosts:         map[string]*model.Host{},
		allocs:        map[string]model.Allocation{},
		alive:         map[string]int64{},
		policy:        model.DefaultPolicy(),
		through:       map[string]int64{},
	}
}

// subscribe pokes kick whenever something under one of prefixes
// changes. Call it before the reflectors start.
func (c *cache) subscribe(kick chan struct{}, prefixes ...string) {
	for _, p := range prefixes {
		c.subs[p] = append(c.subs[p], kick)
	}
}

// follow is subscribe for a loop that starts after the reflectors: kick
// is poked after each change under prefix is in the cache.
func (c *cache) follow(kick chan struct{}, prefix string) {
	c.lateMu.Lock()
	defer c.lateMu.Unlock()
	if c.late == nil {
		c.late = map[string][]chan struct{}{}
	}
	c.late[prefix] = append(c.late[prefix], kick)
}

// notify wakes the loops that follow prefix, without blocking.
func (c *cache) notify(prefix string) {
	for _, k := range c.subs[prefix] {
		poke(k)
	}
	c.lateMu.Lock()
	for _, k := range c.late[prefix] {
		poke(k)
	}
	c.lateMu.Unlock()
}

// poke signals a coalescing work queue of depth one.
func poke(kick chan struct{}) {
	select {
	case kick <- struct{}{}:
	default:
	}
}

// source is one reflected prefix: reset replaces the prefix's contents
// from a listing, apply folds in one watch event. Both run under c.mu.
type source struct {
	prefix string
	reset  func(kvs []store.KV)
	apply  func(ev store.WatchEvent)
}

func (c *cache) sources() []source {
	return []source{
		{store.VMsPrefix, func(kvs []store.KV) {
			c.vms, c.created, c.pending = map[string]*model.VM{}, map[string]int64{}, map[string]*model.VM{}
			c.deleting, c.runningOn = map[string]*model.VM{}, map[string]map[string]*model.VM{}
			c.runningSorted = map[string][]runningVM{}
			c.applyAll(kvs, c.applyVM)
		}, c.applyVM},
		{store.HostsPrefix, func(kvs []store.KV) {
			c.hosts, c.hostsByName, c.fenced = map[string]*model.Host{}, nil, map[string]*model.Host{}
			c.markAll()
			c.liveJ.all = true
			c.applyAll(kvs, c.applyHost)
		}, c.applyHost},
		{store.AllocPrefix, func(kvs []store.KV) {
			c.allocs = map[string]model.Allocation{}
			c.markAll()
			c.applyAll(kvs, c.applyAlloc)
		}, c.applyAlloc},
		{store.AlivePrefix, func(kvs []store.KV) {
			c.alive, c.liveJ.all = map[string]int64{}, true
			c.applyAll(kvs, c.applyAlive)
		}, c.applyAlive},
		{store.PolicyKey, func(kvs []store.KV) {
			c.policy, c.polRev = model.DefaultPolicy(), 0
			c.markAll()
			c.applyAll(kvs, c.applyPolicy)
		}, c.applyPolicy},
	}
}

func (c *cache) applyAll(kvs []store.KV, apply func(store.WatchEvent)) {
	c.gen++
	for _, kv := range kvs {
		apply(store.WatchEvent{Type: store.EventPut, KV: kv, Rev: kv.ModRev})
	}
}

// reflect keeps one source in sync until ctx ends. synced is called once,
// after the first listing is in the cache.
func (c *cache) reflect(ctx context.Context, st store.Store, src source, synced func()) error {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		kvs, rev, err := st.List(ctx, src.prefix)
		if err != nil {
			if errors.Is(err, store.ErrClosed) || ctx.Err() != nil {
				return err
			}
			c.log.Warn("list failed, retrying", "prefix", src.prefix, "err", err)
			sleep(ctx, retryDelay(attempt))
			continue
		}
		c.resetSource(src, kvs, rev)
		if synced != nil {
			synced()
			synced = nil
		}
		c.notify(src.prefix)
		if err := c.watch(ctx, st, src, rev+1); err != nil {
			if errors.Is(err, store.ErrClosed) {
				return err
			}
			if !errors.Is(err, store.ErrCompacted) {
				c.log.Warn("watch broke, re-listing", "prefix", src.prefix, "err", err)
			}
		}
		attempt = 0
	}
	return ctx.Err()
}

// resetSource replaces src's contents with a listing read at rev.
func (c *cache) resetSource(src source, kvs []store.KV, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	src.reset(kvs)
	c.through[src.prefix] = rev
}

func (c *cache) watch(ctx context.Context, st store.Store, src source, from int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range st.Watch(wctx, src.prefix, from) {
		if resp.Err != nil {
			return resp.Err
		}
		c.mu.Lock()
		for _, ev := range resp.Events {
			src.apply(ev)
		}
		if n := len(resp.Events); n > 0 {
			c.through[src.prefix] = max(c.through[src.prefix], resp.Events[n-1].Rev)
		}
		c.mu.Unlock()
		c.notify(src.prefix)
	}
	return nil
}

func decodeKV(kv store.KV, v any) error {
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return fmt.Errorf("controller: decode %s: %w", kv.Key, err)
	}
	return nil
}

// newer reports whether an update at rev is newer than the cached rev.
func newer(cached int64, ok bool, rev int64) bool { return !ok || rev > cached }

func (c *cache) applyVM(ev store.WatchEvent) {
	name := strings.TrimPrefix(ev.KV.Key, store.VMsPrefix)
	old, ok := c.vms[name]
	var oldRev int64
	if ok {
		oldRev = old.Revision
	}
	if !newer(oldRev, ok, ev.Rev) {
		return
	}
	if ev.Type == store.EventDelete {
		c.dropVM(name)
		delete(c.created, name)
		c.dec.Forget(ev.KV.Key, ev.Rev)
		return
	}
	if ev.KV.CreateRev != 0 {
		c.created[name] = ev.KV.CreateRev
	}
	vm, err := c.dec.Decode(ev.KV)
	if err != nil {
		c.log.Warn("skipping undecodable VM", "err", err)
		return
	}
	c.setVM(name, vm)
}

// setVM caches vm under key name and keeps the pending, deleting and
// running sets (c.mu held).
func (c *cache) setVM(name string, vm *model.VM) {
	c.dropVM(name)
	c.vms[name] = vm
	if needsPlacement(vm) {
		c.pending[name] = vm
	}
	if vm.DeletedAt != nil {
		c.deleting[name] = vm
	}
	if runsOn(vm) {
		on := c.runningOn[vm.Status.Host]
		if on == nil {
			on = map[string]*model.VM{}
			c.runningOn[vm.Status.Host] = on
		}
		on[name] = vm
		delete(c.runningSorted, vm.Status.Host)
	}
}

// dropVM forgets the VM under key name and its place in the sets (c.mu
// held).
func (c *cache) dropVM(name string) {
	old, ok := c.vms[name]
	if !ok {
		return
	}
	delete(c.vms, name)
	delete(c.pending, name)
	delete(c.deleting, name)
	if runsOn(old) {
		if on := c.runningOn[old.Status.Host]; on != nil {
			delete(on, name)
			delete(c.runningSorted, old.Status.Host)
			if len(on) == 0 {
				delete(c.runningOn, old.Status.Host)
			}
		}
	}
}

// runsOn says whether vm runs on its host (what the energy ledger
// attributes a host's draw to).
func runsOn(vm *model.VM) bool {
	return vm.Status.Host != "" && vm.Status.Phase == model.PhaseRunning
}

// deletingList returns the VMs marked deleted, oldest first (as
// vmList(DeletedAt != nil), without walking every VM).
func (c *cache) deletingList() []*model.VM {
	c.mu.Lock()
	out := make([]*model.VM, 0, len(c.deleting))
	for _, vm := range c.deleting {
		out = append(out, vm)
	}
	c.mu.Unlock()
	sortByAge(out)
	return out
}

// runningVM is a running VM and its key (vm.Key(), made once per
// change of its host's set, not once per energy pass).
type runningVM struct {
	vm  *model.VM
	key string
}

// runningKeyed returns the running VMs of every host with their keys,
// each host's oldest first (the order vmList gives them in). Only the
// hosts whose set changed since the last call are sorted again; the
// slices are shared: callers must not change them.
func (c *cache) runningKeyed() map[string][]runningVM {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string][]runningVM, len(c.runningOn))
	for h, on := range c.runningOn {
		vms, ok := c.runningSorted[h]
		if !ok {
			sorted := make([]*model.VM, 0, len(on))
			for _, vm := range on {
				sorted = append(sorted, vm)
			}
			sortByAge(sorted)
			vms = make([]runningVM, len(sorted))
			for i, vm := range sorted {
				vms[i] = runningVM{vm: vm, key: vm.Key()}
			}
			c.runningSorted[h] = vms
		}
		out[h] = vms
	}
	return out
}

// runningByHost is runningKeyed without the keys.
func (c *cache) runningByHost() map[string][]*model.VM {
	out := map[string][]*model.VM{}
	for h, vms := range c.runningKeyed() {
		for _, r := range vms {
			out[h] = append(out[h], r.vm)
		}
	}
	return out
}

func (c *cache) applyHost(ev store.WatchEvent) {
	name := strings.TrimPrefix(ev.KV.Key, store.HostsPrefix)
	old, ok := c.hosts[name]
	var oldRev int64
	if ok {
		oldRev = old.Revision
	}
	if !newer(oldRev, ok, ev.Rev) {
		return
	}
	c.gen++
	c.liveJ.dirty[name] = true
	if ev.Type == store.EventDelete {
		delete(c.hosts, name)
		delete(c.fenced, name)
		c.hostsByName = nil
		c.markAll()
		return
	}
	c.mark(name)
	h, err := state.DecodeHost(ev.KV)
	if err != nil {
		c.log.Warn("skipping undecodable host", "err", err)
		return
	}
	h.Name = name
	c.setHost(h)
}

// setHost caches h and keeps the sorted list and the fenced index
// (c.mu held; the caller marks the journals).
func (c *cache) setHost(h *model.Host) {
	c.hosts[h.Name] = h
	c.hostsByName = nil
	if h.State == model.HostFenced {
		c.fenced[h.Name] = h
	} else {
		delete(c.fenced, h.Name)
	}
}

func (c *cache) applyAlloc(ev store.WatchEvent) {
	name := strings.TrimPrefix(ev.KV.Key, store.AllocPrefix)
	old, ok := c.allocs[name]
	if !newer(old.Revision, ok, ev.Rev) {
		return
	}
	c.gen++
	c.mark(name)
	if ev.Type == store.EventDelete {
		delete(c.allocs, name)
		return
	}
	var a model.Allocation
	if err := decodeKV(ev.KV, &a); err != nil {
		c.log.Warn("skipping undecodable allocation", "err", err)
		return
	}
	a.Host = name
	a.Revision = ev.KV.ModRev
	c.allocs[name] = a
}

func (c *cache) applyAlive(ev store.WatchEvent) {
	name := strings.TrimPrefix(ev.KV.Key, store.AlivePrefix)
	old, ok := c.alive[name]
	if !newer(old, ok, ev.Rev) {
		return
	}
	c.gen++
	c.liveJ.dirty[name] = true
	if ev.Type == store.EventDelete {
		delete(c.alive, name)
		return
	}
	c.alive[name] = ev.KV.ModRev
	var rec model.AliveRecord
	if c.aliveTTL == nil {
		c.aliveTTL = map[string]int{}
	}
	if json.Unmarshal(ev.KV.Value, &rec) == nil {
		c.aliveTTL[name] = rec.LeaseTTL
	} else {
		delete(c.aliveTTL, name)
	}
}

func (c *cache) applyPolicy(ev store.WatchEvent) {
	if ev.KV.Key != store.PolicyKey || ev.Rev <= c.polRev {
		return
	}
	c.gen++
	c.polRev = ev.Rev
	c.markAll()
	if ev.Type == store.EventDelete {
		c.policy = model.DefaultPolicy()
		return
	}
	p := model.DefaultPolicy()
	if err := decodeKV(ev.KV, &p); err != nil {
		c.log.Warn("skipping undecodable policy", "err", err)
		return
	}
	c.policy = p
}

// putVM records a VM this process just wrote at rev.
func (c *cache) putVM(vm *model.VM, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.vms[vm.Key()]; ok && old.Revision >= rev {
		return
	}
	vm.Revision = rev
	c.setVM(vm.Key(), vm)
}

// putHost records a host read directly at its revision (h.Revision).
func (c *cache) putHost(h *model.Host) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.hosts[h.Name]; ok && old.Revision >= h.Revision {
		return
	}
	c.gen++
	c.setHost(h)
	c.mark(h.Name)
	c.liveJ.dirty[h.Name] = true
}

// putAlloc records an allocation this process just wrote at rev.
func (c *cache) putAlloc(a model.Allocation, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.allocs[a.Host]; ok && old.Revision >= rev {
		return
	}
	c.gen++
	a.Revision = rev
	c.allocs[a.Host] = a
	c.mark(a.Host)
}

// putPolicy records a policy read directly at rev (after a placement
// lost its guard on the policy's revision).
func (c *cache) putPolicy(p model.Policy, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev <= c.polRev {
		return
	}
	c.gen++
	c.policy, c.polRev = p, rev
	c.markAll()
}

// policyOf returns the cached policy and its revision.
func (c *cache) policyOf() (model.Policy, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.policy, c.polRev
}

// snapshot returns the placement view: hosts sorted by name, allocations,
// policy, and the capacity generation it was taken at.
func (c *cache) snapshot() (*Snapshot, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &Snapshot{Hosts: make([]model.Host, 0, len(c.hosts)), Allocs: make(map[string]model.Allocation, len(c.allocs)), Policy: c.policy, PolicyRev: c.polRev}
	for _, h := range c.hosts {
		s.Hosts = append(s.Hosts, *h)
	}
	for i := range s.Hosts {
		withUsage(c.usage, &s.Hosts[i])
	}
	sort.Slice(s.Hosts, func(i, j int) bool { return s.Hosts[i].Name < s.Hosts[j].Name })
	for k, a := range c.allocs {
		s.Allocs[k] = a
	}
	return s, c.gen
}

// vmList returns the cached VMs that match keep, oldest first.
func (c *cache) vmList(keep func(*model.VM) bool) []*model.VM {
	c.mu.Lock()
	var out []*model.VM
	for _, vm := range c.vms {
		if keep(vm) {
			out = append(out, vm)
		}
	}
	c.mu.Unlock()
	sortByAge(out)
	return out
}

// vmsByHost returns the cached VMs placed on a host, by host, each
// host's oldest first: what grouping vmList(Status.Host != "") by host
// gives, with a sort a host instead of one of every VM (the balancer's
// round, every 5 minutes: a sort of 100,000 VMs was a third of it at
// 10,000 hosts).
func (c *cache) vmsByHost() map[string][]*model.VM {
	c.mu.Lock()
	out := map[string][]*model.VM{}
	for _, vm := range c.vms {
		if vm.Status.Host != "" {
			out[vm.Status.Host] = append(out[vm.Status.Host], vm)
		}
	}
	c.mu.Unlock()
	for _, vms := range out {
		sortByAge(vms)
	}
	return out
}

// vmHosts returns every cached VM's key and host (vmList in a map,
// without the sort: the energy ledger's persist asks for it every minute,
// 100,000 VMs at 10,000 hosts).
func (c *cache) vmHosts() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.vms))
	for _, vm := range c.vms {
		out[vm.Key()] = vm.Status.Host
	}
	return out
}

// sortByAge sorts VMs oldest first, then by key.
func sortByAge(vms []*model.VM) {
	sort.Slice(vms, func(i, j int) bool {
		if !vms[i].CreatedAt.Equal(vms[j].CreatedAt) {
			return vms[i].CreatedAt.Before(vms[j].CreatedAt)
		}
		return keyLess(vms[i], vms[j])
	})
}

// keyLess is a.Key() < b.Key() without building the keys (VMs created
// together share CreatedAt: a sort by age compares many keys).
func keyLess(a, b *model.VM) bool {
	x, y := [3]string{a.Project, "/", a.Name}, [3]string{b.Project, "/", b.Name}
	i, j, xi, yj := 0, 0, 0, 0
	for {
		for i < 3 && xi == len(x[i]) {
			i, xi = i+1, 0
		}
		for j < 3 && yj == len(y[j]) {
			j, yj = j+1, 0
		}
		switch {
		case i == 3:
			return j < 3
		case j == 3:
			return false
		case x[i][xi] != y[j][yj]:
			return x[i][xi] < y[j][yj]
		}
		xi, yj = xi+1, yj+1
	}
}

// pendingList returns the VMs that need placement, oldest first (as
// vmList(needsPlacement), without walking every VM).
func (c *cache) pendingList() []*model.VM {
	c.mu.Lock()
	out := make([]*model.VM, 0, len(c.pending))
	for _, vm := range c.pending {
		out = append(out, vm)
	}
	c.mu.Unlock()
	sortByAge(out)
	return out
}

// createRevs returns the create revision of each of vms (0 if unknown).
func (c *cache) createRevs(vms []*model.VM) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int64, len(vms))
	for i, vm := range vms {
		out[i] = c.created[vm.Key()]
	}
	return out
}

// hostView returns copies of the hosts and which of them are alive.
func (c *cache) hostView() ([]model.Host, map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sortHosts()
	hosts := make([]model.Host, len(c.hostsByName))
	alive := make(map[string]bool, len(c.alive))
	for i, h := range c.hostsByName {
		hosts[i] = *h
		withUsage(c.usage, &hosts[i])
	}
	for k := range c.alive {
		alive[k] = true
	}
	return hosts, alive
}

// hostCount is the number of cached hosts.
func (c *cache) hostCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.hosts)
}

// sortHosts fills hostsByName when a change emptied it (c.mu held).
func (c *cache) sortHosts() {
	if c.hostsByName != nil {
		return
	}
	c.hostsByName = make([]*model.Host, 0, len(c.hosts))
	for _, h := range c.hosts {
		c.hostsByName = append(c.hostsByName, h)
	}
	sort.Slice(c.hostsByName, func(i, j int) bool { return c.hostsByName[i].Name < c.hostsByName[j].Name })
}

// hostsShared returns the cached hosts sorted by name without copying
// them, and the usage overlay: the records are shared (read only), and
// the slice is never changed after it is returned (a change of the hosts
// makes a new one). The energy pass reads them every second; hostView
// copied every host and its usage (a third of that pass at 10,000 hosts).
func (c *cache) hostsShared() ([]*model.Host, UsageView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sortHosts()
	return c.hostsByName, c.usage
}

// balancerCounts returns the Balancers count of every cached host that
// holds one, or that is named in want (countBalancers: no copy of every
// host and its usage on each pass).
func (c *cache) balancerCounts(want map[string]int) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for name, h := range c.hosts {
		if h.Balancers != 0 {
			out[name] = h.Balancers
		}
	}
	for name := range want {
		if h := c.hosts[name]; h != nil {
			out[name] = h.Balancers
		}
	}
	return out
}

// takeLive returns the hosts whose record or alive key changed since
// the last call and whether every host must be looked at (a re-list),
// and empties the liveness journal.
func (c *cache) takeLive() (map[string]bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.liveJ.take()
}

// hostsNamed returns copies of the cached hosts among names, sorted by
// name, usage overlaid (as hostView).
func (c *cache) hostsNamed(names map[string]bool) []model.Host {
	c.mu.Lock()
	out := make([]model.Host, 0, len(names))
	for n := range names {
		if h := c.hosts[n]; h != nil {
			out = append(out, *h)
			withUsage(c.usage, &out[len(out)-1])
		}
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// fencedHosts returns copies of the hosts in state fenced, by name.
func (c *cache) fencedHosts() map[string]*model.Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fenced) == 0 {
		return nil
	}
	out := make(map[string]*model.Host, len(c.fenced))
	for n, h := range c.fenced {
		cp := *h
		withUsage(c.usage, &cp)
		out[n] = &cp
	}
	return out
}

// anyStandby says whether a cached host is in standby (the power
// controller has nothing to do when none is and standby is off).
func (c *cache) anyStandby() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		if h.State == model.HostStandby {
			return true
		}
	}
	return false
}

// anyDraining says whether a cached host has a drain not done yet.
func (c *cache) anyDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		if h.Drain != nil && !h.Drain.Done {
			return true
		}
	}
	return false
}
