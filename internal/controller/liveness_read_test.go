package controller

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/ha"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// liveFeed feeds host records and alive keys to caches as a watch
// would, at increasing revisions.
type liveFeed struct {
	rev    int64
	caches []*cache
}

func (f *liveFeed) apply(fn func(c *cache, ev store.WatchEvent), ev store.WatchEvent) {
	f.rev++
	ev.Rev, ev.KV.ModRev = f.rev, f.rev
	for _, c := range f.caches {
		c.mu.Lock()
		fn(c, ev)
		c.mu.Unlock()
	}
}

func (f *liveFeed) putHost(h model.Host) {
	b, _ := json.Marshal(h)
	f.apply((*cache).applyHost, store.WatchEvent{Type: store.EventPut, KV: store.KV{Key: store.HostKey(h.Name), Value: b}})
}

func (f *liveFeed) deleteHost(name string) {
	f.apply((*cache).applyHost, store.WatchEvent{Type: store.EventDelete, KV: store.KV{Key: store.HostKey(name)}})
}

func (f *liveFeed) alive(name string, here bool, ttl int) {
	if !here {
		f.apply((*cache).applyAlive, store.WatchEvent{Type: store.EventDelete, KV: store.KV{Key: store.AliveKey(name)}})
		return
	}
	b, _ := json.Marshal(model.AliveRecord{Server: "s", LeaseTTL: ttl})
	f.apply((*cache).applyAlive, store.WatchEvent{Type: store.EventPut, KV: store.KV{Key: store.AliveKey(name), Value: b}})
}

// relist replaces the hosts prefix of every cache, as a broken watch's
// re-list does.
func (f *liveFeed) relist(hosts []model.Host) {
	f.rev++
	kvs := make([]store.KV, len(hosts))
	for i, h := range hosts {
		b, _ := json.Marshal(h)
		kvs[i] = store.KV{Key: store.HostKey(h.Name), Value: b, ModRev: f.rev}
	}
	for _, c := range f.caches {
		c.mu.Lock()
		c.sources()[1].reset(kvs)
		c.mu.Unlock()
	}
}

func bareReconciler(c *cache, now func() time.Time) *reconciler {
	return &reconciler{m: &Manager{cfg: Config{}, log: slog.New(slog.DiscardHandler)}, c: c, now: now, ha: newHAState(now())}
}

// TestLivenessFollowsChanges: the liveness pass that looks only at the
// hosts whose record or alive key changed, and at those it watches,
// decides exactly what a look at every host decides (the pass before
// issue 14's third round), through random host puts (states, LastSeen),
// deletions, alive keys coming and going, re-lists and clock steps, the
// decided steps written back as a store write would be.
func TestLivenessFollowsChanges(t *testing.T) {
	tm := ha.TimingsOf(model.DefaultHAPolicy())
	states := []model.HostState{model.HostReady, model.HostReady, model.HostReady, model.HostSuspect, model.HostFailed,
		model.HostDown, model.HostFenced, model.HostMaintenance, model.HostStandby}
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 14))
		now := time.Unix(1000, 0)
		clock := func() time.Time { return now }
		inc, full := newCache(slog.New(slog.DiscardHandler)), newCache(slog.New(slog.DiscardHandler))
		feed := &liveFeed{caches: []*cache{inc, full}}
		ri, rf := bareReconciler(inc, clock), bareReconciler(full, clock)
		hosts := map[string]model.Host{}
		put := func(h model.Host) { hosts[h.Name] = h; feed.putHost(h) }
		for i := range 30 {
			h := model.Host{Meta: model.Meta{Name: fmt.Sprintf("h%02d", i)}, State: model.HostReady, LastSeen: now}
			put(h)
			if i%5 != 0 {
				feed.alive(h.Name, true, 10)
			}
		}
		steps := 0
		for step := range 400 {
			switch op := rng.IntN(20); {
			case op < 5:
				now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			case op < 9:
				feed.alive(fmt.Sprintf("h%02d", rng.IntN(34)), rng.IntN(3) > 0, rng.IntN(12))
			case op < 12:
				h := model.Host{Meta: model.Meta{Name: fmt.Sprintf("h%02d", rng.IntN(34))}, State: states[rng.IntN(len(states))]}
				h.LastSeen = now.Add(-time.Duration(rng.IntN(20)) * time.Second)
				put(h)
			case op < 13:
				n := fmt.Sprintf("h%02d", rng.IntN(34))
				delete(hosts, n)
				feed.deleteHost(n)
			case op < 14:
				all := make([]model.Host, 0, len(hosts))
				for _, h := range hosts {
					all = append(all, h)
				}
				feed.relist(all)
			}
			got := ri.liveHosts()
			in := ri.observeRenewals(got, now)
			ri.keepWatching(in, tm)
			everyHost, _ := full.hostView()
			want := rf.observeRenewals(everyHost, now)
			gs, ws := ha.HostSteps(tm, now, in), ha.HostSteps(tm, now, want)
			if !reflect.DeepEqual(gs, ws) {
				t.Fatalf("seed %d, step %d: steps %+v, a look at every host decides %+v", seed, step, gs, ws)
			}
			byName := map[string]ha.Host{}
			for _, h := range want {
				byName[h.Name] = h
			}
			for _, h := range in {
				if w := byName[h.Name]; !reflect.DeepEqual(h, w) {
					t.Fatalf("seed %d, step %d: %+v, a look at every host sees %+v", seed, step, h, w)
				}
			}
			for _, s := range ws { // written back, as setHostState does
				h := hosts[s.Host]
				h.State = s.To
				put(h)
				steps++
			}
		}
		if steps == 0 {
			t.Fatalf("seed %d: no host ever changed state: the sequence tests nothing", seed)
		}
	}
}

// TestQuietLivenessPassReadsNoHost: at rest (every host ready, its alive
// key present) the liveness pass, which runs whatever happens, copies no host: the
// memory it allocates does not grow with the hosts. Before, each pass
// copied every host out of the cache twice (docs/scale.md: 6 % of the
// server at rest at 1,000 hosts).
func TestQuietLivenessPassReadsNoHost(t *testing.T) {
	perPass := func(n int) float64 {
		c := newCache(slog.New(slog.DiscardHandler))
		feed := &liveFeed{caches: []*cache{c}}
		now := time.Unix(1000, 0)
		r := bareReconciler(c, func() time.Time { return now })
		for i := range n {
			name := fmt.Sprintf("h%05d", i)
			feed.putHost(model.Host{Meta: model.Meta{Name: name}, State: model.HostReady, Driver: "sim", Labels: map[string]string{"rack": "r1"}})
			feed.alive(name, true, 10)
		}
		if err := r.haPass(t.Context()); err != nil { // the term's first pass looks at every host
			t.Fatal(err)
		}
		const passes = 20
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for range passes {
			now = now.Add(100 * time.Millisecond)
			if err := r.haPass(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&m1)
		return float64(m1.TotalAlloc-m0.TotalAlloc) / passes
	}
	small, large := perPass(100), perPass(5000)
	t.Logf("bytes allocated per quiet pass: %.0f at 100 hosts, %.0f at 5,000", small, large)
	if large > 16<<10 {
		t.Fatalf("a quiet pass over 5,000 hosts allocates %.0f bytes (%.0f at 100 hosts): it still reads every host", large, small)
	}
}
