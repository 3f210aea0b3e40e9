package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/watchcache"
)

// view is the server's watch-fed cache (internal/watchcache) of what it
// answers often: VMs (lists, pages, the agents' assignments), hosts,
// allocations, liveness keys, migrations and snapshots (the agents' long
// polls), usage samples. Each agent's long poll waits on its host's
// signal instead of a watch of its own, and answers from memory.
type view struct {
	c                                            *watchcache.Cache
	vms, hosts, allocs, alive, migrations, snaps *watchcache.Table
	samples                                      *watchcache.Table
	tokens                                       *watchcache.Table          // the API tokens (authenticate)
	usage                                        *sampleIndex               // over samples (its own lock and goroutine: sampleindex.go)
	onHost                                       map[string]map[string]bool // host → keys of the VMs on it (cache lock)
	left                                         leftHosts                  // VMs that left each host, for deltas (cache lock)
	signals                                      signals
	dec                                          *state.VMDecoder // VMs decoded once per process
	backlog                                      *placeBacklog    // VMs waiting for the scheduler (backlog.go); nil: none counted
	cancel                                       context.CancelFunc
	done                                         chan struct{}
	// plainUserData is nudged when a VM or migration record holds user
	// data in clear (a server from before sealing wrote it): the server
	// seals it (userdata.go)
	plainUserData chan struct{}
}

// cachedVMOf is the VM an item of the view's VM table holds, decoded
// once per process (state.VMDecoder: shared with the controllers' cache)
// and never changed; nil when undecodable.
func cachedVMOf(it *watchcache.Item) *model.VM {
	if it == nil {
		return nil
	}
	vm, _ := it.Obj.(*model.VM)
	return vm
}

func vmHost(it *watchcache.Item) string {
	if vm := cachedVMOf(it); vm != nil {
		return vm.Status.Host
	}
	return ""
}

// newView builds the view; ownSample says which usage samples this
// process wrote (usageHub.own: not decoded again).
func newView(st store.Store, dec *state.VMDecoder, ownSample func(key string) bool) *view {
	v := &view{onHost: map[string]map[string]bool{}, signals: signals{m: map[string]*signal{}}, dec: dec, plainUserData: make(chan struct{}, 1)}
	decodeVM := func(kv store.KV) (any, error) {
		vm, err := dec.Decode(kv)
		if err != nil {
			return nil, err
		}
		return vm, nil
	}
	v.vms = &watchcache.Table{Prefix: store.VMsPrefix, Decode: decodeVM, Changed: v.vmChanged, Reset: v.vmsReset}
	v.hosts = &watchcache.Table{Prefix: store.HostsPrefix, Decode: func(kv store.KV) (any, error) { return state.DecodeHost(kv) }}
	v.allocs = &watchcache.Table{Prefix: store.AllocPrefix, Decode: func(kv store.KV) (any, error) {
		a := &model.Allocation{}
		return a, json.Unmarshal(kv.Value, a)
	}}
	v.alive = &watchcache.Table{Prefix: store.AlivePrefix, Decode: func(kv store.KV) (any, error) {
		rec := &model.AliveRecord{}
		return rec, json.Unmarshal(kv.Value, rec)
	}}
	v.migrations = &watchcache.Table{Prefix: store.MigrationsPrefix,
		Decode:  func(kv store.KV) (any, error) { return state.DecodeMigration(kv) },
		Changed: v.migrationChanged, Reset: func(rev int64) { v.signals.bumpAll("m/", rev) }}
	v.snaps = &watchcache.Table{Prefix: store.SnapshotsPrefix,
		Decode:  func(kv store.KV) (any, error) { return state.DecodeSnapshot(kv) },
		Changed: v.snapshotChanged, Reset: func(rev int64) { v.signals.bumpAll("a/", rev) }}
	v.usage = newSampleIndex()
	v.usage.own = ownSample
	v.samples = &watchcache.Table{Prefix: store.SamplesPrefix, Changed: v.usage.changed}
	v.samples.Reset = func(int64) { v.usage.reset(v.samples) }
	v.tokens = &watchcache.Table{Prefix: store.TokensPrefix, Decode: func(kv store.KV) (any, error) {
		t := &model.Token{}
		return t, json.Unmarshal(kv.Value, t)
	}}
	v.c = watchcache.New(st, store.Root, nil, v.vms, v.hosts, v.allocs, v.alive, v.migrations, v.snaps, v.samples, v.tokens)
	return v
}

// start runs the cache until stop (or the store closes).
func (v *view) start(log interface{ Warn(string, ...any) }) {
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel, v.done = cancel, make(chan struct{})
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		v.usage.run(ctx)
	}()
	go func() {
		defer close(v.done)
		defer func() { <-indexed }()
		if err := v.c.Run(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrClosed) {
			log.Warn("the server's cache stopped", "err", err)
		}
	}()
}

func (v *view) stop() {
	v.cancel()
	<-v.done
}

// notePlainUserData nudges the sealer when cur holds user data in clear.
func (v *view) notePlainUserData(cur *watchcache.Item) {
	if cur != nil && bytes.Contains(cur.Value, rawUserData) {
		select {
		case v.plainUserData <- struct{}{}:
		default:
		}
	}
}

func (v *view) vmChanged(old, cur *watchcache.Item, rev int64) {
	v.notePlainUserData(cur)
	v.backlog.changed(cachedVMOf(old), cachedVMOf(cur))
	if cur == nil && old != nil {
		v.dec.Forget(old.Key, rev)
	}
	oh, nh := vmHost(old), vmHost(cur)
	key := ""
	if old != nil {
		key = old.Key
	} else {
		key = cur.Key
	}
	if oh != "" {
		if oh != nh {
			delete(v.onHost[oh], key)
			v.left.add(oh, key, rev)
		}
		// a host's own status report changes nothing its agent acts on:
		// it wakes only the polls that want every change (no delta)
		v.signals.bumpFor("a/"+oh, rev, oh != nh || !reportOnly(cachedVMOf(old), cachedVMOf(cur)))
	}
	if nh != "" {
		set := v.onHost[nh]
		if set == nil {
			set = map[string]bool{}
			v.onHost[nh] = set
		}
		set[key] = true
		v.left.back(nh, key)
		if nh != oh {
			v.signals.bump("a/"+nh, rev)
		}
	}
}

func (v *view) vmsReset(rev int64) {
	v.onHost = map[string]map[string]bool{}
	v.left.reset(rev)
	waiting := 0
	v.vms.Each(store.VMsPrefix, "", func(it *watchcache.Item) bool {
		if awaitsScheduler(cachedVMOf(it)) {
			waiting++
		}
		if h := vmHost(it); h != "" {
			set := v.onHost[h]
			if set == nil {
				set = map[string]bool{}
				v.onHost[h] = set
			}
			set[it.Key] = true
		}
		return true
	})
	v.backlog.reset(waiting)
	v.signals.bumpAll("a/", rev)
}

func (v *view) snapshotChanged(old, cur *watchcache.Item, rev int64) {
	for _, it := range []*watchcache.Item{old, cur} {
		if it != nil && it.Obj != nil {
			v.signals.bump("a/"+it.Obj.(*model.Snapshot).Host, rev)
		}
	}
}

func (v *view) migrationChanged(old, cur *watchcache.Item, rev int64) {
	v.notePlainUserData(cur)
	for _, it := range []*watchcache.Item{old, cur} {
		if it != nil && it.Obj != nil {
			m := it.Obj.(*model.Migration)
			v.signals.bump("m/"+m.Source, rev)
			v.signals.bump("m/"+m.Target, rev)
		}
	}
}

// signals wake long polls: per name ("a/HOST" for a host's assignments,
// "m/HOST" for its migrations) the revision of the last change and a
// channel closed by the next one.
type signals struct {
	mu  sync.Mutex
	m   map[string]*signal
	all map[string]int64 // per kind: the revision of the last bumpAll
}

// signal is one name's last change: rev, of any change; acted, of the
// last its agent acts on (every change but a report of its own status:
// what delta polls wait for).
type signal struct {
	rev, acted int64
	ch         chan struct{}
}

func (s *signals) bump(name string, rev int64) { s.bumpFor(name, rev, true) }

// bumpFor marks name changed at rev; acted: a change its agent acts on.
func (s *signals) bumpFor(name string, rev int64, acted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sg := s.m[name]
	if sg == nil {
		sg = &signal{}
		s.m[name] = sg
	}
	sg.rev = max(sg.rev, rev)
	if acted {
		sg.acted = max(sg.acted, rev)
	}
	if sg.ch != nil {
		close(sg.ch)
		sg.ch = nil
	}
}

// bumpAll marks every name of kind changed at rev (a re-listed table).
func (s *signals) bumpAll(kind string, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.all == nil {
		s.all = map[string]int64{}
	}
	s.all[kind] = rev
	for name, sg := range s.m {
		if strings.HasPrefix(name, kind) {
			sg.rev, sg.acted = max(sg.rev, rev), max(sg.acted, rev)
			if sg.ch != nil {
				close(sg.ch)
				sg.ch = nil
			}
		}
	}
}

// changedAfter returns nil when name changed after rev (acted: by a
// change its agent acts on), else a channel closed at its next change.
func (s *signals) changedAfter(name string, rev int64, acted bool) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	kind, _, _ := strings.Cut(name, "/")
	if s.all[kind+"/"] > rev {
		return nil
	}
	sg := s.m[name]
	if sg == nil {
		sg = &signal{}
		s.m[name] = sg
	}
	if sg.rev > rev && (!acted || sg.acted > rev) {
		return nil
	}
	if sg.ch == nil {
		sg.ch = make(chan struct{})
	}
	return sg.ch
}

// waitChange blocks until name changed after rev (acted: by a change
// its agent acts on), wait passes or ctx ends. A rev the cache has not
// reached yet (the agent's last answer came from another server) is
// first waited for.
func (v *view) waitChange(ctx context.Context, name string, rev int64, wait time.Duration, acted bool) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := v.c.WaitRev(wctx, rev); err != nil {
		return
	}
	for {
		ch := v.signals.changedAfter(name, rev, acted)
		if ch == nil {
			return
		}
		select {
		case <-ch:
		case <-wctx.Done():
			return
		}
	}
}

// hostVMs is what an assignments answer carries: the stored JSON
// (revision spliced in) of the host's VMs, in key order — all of them,
// or in a delta those changed after the poll's revision and the keys of
// those that left the host since —, the keys of every VM on the host
// (when a snapshot is stored at all: else nil), and the cache revision
// they are at.
type hostVMs struct {
	vms     []json.RawMessage
	delta   bool
	removed []string // project/name
	keys    map[string]bool
	rev     int64
}

// vmsOn returns host's VMs: a delta from after when after > 0 and the
// view knows every VM that left the host since (else all of them).
func (v *view) vmsOn(host string, after int64) hostVMs {
	var out hostVMs
	v.c.Read(func(rev int64) {
		out.rev = rev
		out.delta = after > 0 && after <= rev && v.left.since(host) <= after
		if v.snaps.Len() > 0 {
			// keys only serve snapshotsOn: with no snapshot stored (at
			// rest, 333 answers a second at 10,000 hosts) no map is made
			out.keys = make(map[string]bool, len(v.onHost[host]))
		}
		names := make([]string, 0, len(v.onHost[host]))
		for k := range v.onHost[host] {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			if it := v.vms.Get(k); it != nil {
				if out.keys != nil {
					out.keys[k] = true
				}
				if !out.delta || it.ModRev > after {
					out.vms = append(out.vms, state.VMJSON(it.Value, it.ModRev))
				}
			}
		}
		if out.delta {
			out.removed = v.left.after(host, after)
		}
	})
	return out
}

// snapshotsOn returns the snapshot records of host for the VMs in keys.
func (v *view) snapshotsOn(host string, keys map[string]bool) []model.Snapshot {
	var out []model.Snapshot
	if len(keys) == 0 {
		return nil
	}
	v.c.Read(func(int64) {
		for k := range keys {
			p, n, _ := strings.Cut(strings.TrimPrefix(k, store.VMsPrefix), "/")
			v.snaps.Each(store.VMSnapshotsPrefix(p, n), "", func(it *watchcache.Item) bool {
				if sn, ok := it.Obj.(*model.Snapshot); ok && sn.Host == host {
					out = append(out, *sn)
				}
				return true
			})
		}
	})
	slices.SortFunc(out, func(a, b model.Snapshot) int {
		return strings.Compare(a.Project+"/"+a.VM+"/"+a.Name, b.Project+"/"+b.VM+"/"+b.Name)
	})
	return out
}

// migrationsFor returns the migrations host still has to act on.
func (v *view) migrationsFor(host string) ([]model.Migration, int64) {
	out := []model.Migration{}
	var at int64
	v.c.Read(func(rev int64) {
		at = rev
		v.migrations.Each(store.MigrationsPrefix, "", func(it *watchcache.Item) bool {
			if m, ok := it.Obj.(*model.Migration); ok && needsHost(m, host) {
				out = append(out, *m)
			}
			return true
		})
	})
	return out, at
}

// token returns a copy of the cached token stored under hash; false when
// the cache is not synced or does not hold it (it may lag behind a token
// just created: the caller asks the store then).
func (v *view) token(hash string) (*model.Token, bool) {
	if !v.c.Synced() {
		return nil, false
	}
	var tok *model.Token
	v.c.Read(func(int64) {
		if it := v.tokens.Get(store.TokenKey(hash)); it != nil {
			if t, ok := it.Obj.(*model.Token); ok {
				c := *t
				tok = &c
			}
		}
	})
	return tok, tok != nil
}

// consistent waits until the cache holds every write the store had when
// it was called (cacheWait bounds it).
func (v *view) consistent(ctx context.Context) (int64, error) {
	rev, _, err := v.consistentTimed(ctx)
	return rev, err
}

// readTiming is where a consistent read's time went: the store's
// revision (a linearizable read, shared with the requests that came
// before it began) and the wait for the cache to apply it.
type readTiming struct{ rev, wait time.Duration }

// header writes t as a Server-Timing header (milliseconds), for clients
// and benchmarks that tell the store's round trip from the rest.
func (t readTiming) header(w http.ResponseWriter) {
	w.Header().Set("Server-Timing", fmt.Sprintf("rev;dur=%.3f, wait;dur=%.3f",
		float64(t.rev.Microseconds())/1000, float64(t.wait.Microseconds())/1000))
}

// consistentTimed is consistent, and says where the time went.
func (v *view) consistentTimed(ctx context.Context) (int64, readTiming, error) {
	ctx, cancel := context.WithTimeout(ctx, cacheWait)
	defer cancel()
	t0 := time.Now()
	rev, err := v.c.StoreRev(ctx, store.LeaderKey)
	t1 := time.Now()
	if err == nil {
		err = v.c.WaitRev(ctx, rev)
	}
	t := readTiming{rev: t1.Sub(t0), wait: time.Since(t1)}
	if err != nil {
		return 0, t, fmt.Errorf("server: %w", err)
	}
	return rev, t, nil
}

// atLeast waits until the cache applied rev (cacheWait bounds it),
// without reading the store: only a revision the cache has not reached
// after minRevGrace is checked against the store's (one past it would
// never come: 400).
func (v *view) atLeast(ctx context.Context, rev int64) error {
	if v.c.Rev() >= rev {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, cacheWait)
	defer cancel()
	gctx, gcancel := context.WithTimeout(ctx, minRevGrace)
	err := v.c.WaitRev(gctx, rev)
	gcancel()
	if err == nil {
		return nil
	}
	cur, err := v.c.StoreRev(ctx, store.LeaderKey)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if rev > cur {
		return fieldError("min-revision", "%d is past the store's revision %d; pass a revision from an earlier answer", rev, cur)
	}
	if err := v.c.WaitRev(ctx, rev); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// minRevGrace is how long a min-revision waits for the cache before it
// asks the store whether the revision exists at all (the watch brings
// a write within milliseconds on a healthy server).
const minRevGrace = time.Second

// vm returns the stored VM project/name as of a consistent read (every
// write acknowledged before the call is in it), decoded afresh (the
// caller may change it). When the cache cannot catch up it reads the
// store.
func (v *view) vm(ctx context.Context, repo *state.Repo, project, name string, minRev int64) (*model.VM, readTiming, error) {
	var t readTiming
	var err error
	if minRev > 0 {
		if err = v.atLeast(ctx, minRev); err != nil {
			return nil, t, err
		}
	} else {
		_, t, err = v.consistentTimed(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, t, err
		}
		vm, err := repo.GetVM(ctx, project, name)
		return vm, t, err
	}
	key := store.VMKey(project, name)
	var kv store.KV
	found := false
	v.c.Read(func(int64) {
		if it := v.vms.Get(key); it != nil {
			kv, found = store.KV{Key: it.Key, Value: it.Value, ModRev: it.ModRev, CreateRev: it.CreateRev, Lease: it.Lease}, true
		}
	})
	if !found {
		return nil, t, fmt.Errorf("server: vm %s/%s: %w", project, name, store.ErrNotFound)
	}
	vm, err := state.DecodeVM(kv)
	return vm, t, err
}

// cacheWait bounds how long a request waits for the cache to catch up.
const cacheWait = 10 * time.Second
