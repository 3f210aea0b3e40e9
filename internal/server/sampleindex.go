package server

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/watchcache"
)

// sampleIndex finds the freshest sample of each host and VM among every
// server's usage samples (the view's samples table). It is kept beside
// the cache, not in its apply: the table holds the records' bytes, its
// hooks queue each change, and the index's own goroutine decodes them
// and updates the index under its own lock. A record is a shard of up to
// 128 hosts and their VMs (10 ms of JSON at 10,000 hosts and 100,000
// VMs, 79 shards every 30 s); decoded in the cache's apply, under its
// write lock, a burst of them held back every consistent read that came
// meanwhile until the burst was decoded (the cache's wait, docs/scale.md
// "Eighth round: the cache's wait"). The index now trails the cache by
// that decoding; usage is sampled every 30 s and nothing reads it back
// as a write of its own (caughtUp waits for it where a test must).
type sampleIndex struct {
	mu    sync.RWMutex
	hosts map[string]sampleRef
	vms   map[string]sampleRef          // vm: index into the host's VMs
	byKey map[string]*model.UsageSample // each record's decoded sample

	decode atomic.Pointer[func([]byte) (*model.UsageSample, error)] // decodeSample; tests slow it
	// own says which records this process wrote (usageHub.own; nil:
	// none): they are not decoded, the hub holds the same hosts, fresher
	// (a server's own samples were its largest decoded table at 10,000
	// hosts: docs/scale.md, eighth round, memory)
	own func(key string) bool

	qmu      sync.Mutex
	pending  []sampleChange
	queued   uint64        // changes queued (under qmu)
	applied  uint64        // changes applied to the index (under qmu)
	progress chan struct{} // closed and replaced when applied moves (under qmu)
	wake     chan struct{} // one token: pending is not empty
}

type sampleRef struct {
	s      *model.UsageSample
	hi, vi int
}

// sampleChange is one record changed (value nil: deleted), or with
// reset every record there is (the table loaded afresh).
type sampleChange struct {
	reset bool
	recs  []sampleRec
}

type sampleRec struct {
	key   string
	value []byte
}

func newSampleIndex() *sampleIndex {
	x := &sampleIndex{hosts: map[string]sampleRef{}, vms: map[string]sampleRef{}, byKey: map[string]*model.UsageSample{},
		progress: make(chan struct{}), wake: make(chan struct{}, 1)}
	dec := decodeSample
	x.decode.Store(&dec)
	return x
}

func decodeSample(b []byte) (*model.UsageSample, error) {
	s := &model.UsageSample{}
	return s, json.Unmarshal(b, s)
}

// changed is the samples table's Changed hook (cache lock held): it
// only queues the record's bytes.
func (x *sampleIndex) changed(old, cur *watchcache.Item, _ int64) {
	rec := sampleRec{}
	if cur != nil {
		rec.key, rec.value = cur.Key, cur.Value
	} else {
		rec.key = old.Key
	}
	x.enqueue(sampleChange{recs: []sampleRec{rec}})
}

// reset is the samples table's Reset hook (cache lock held).
func (x *sampleIndex) reset(t *watchcache.Table) {
	c := sampleChange{reset: true}
	t.Each(store.SamplesPrefix, "", func(it *watchcache.Item) bool {
		c.recs = append(c.recs, sampleRec{key: it.Key, value: it.Value})
		return true
	})
	x.enqueue(c)
}

func (x *sampleIndex) enqueue(c sampleChange) {
	x.qmu.Lock()
	x.pending = append(x.pending, c)
	x.queued++
	x.qmu.Unlock()
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// run applies the queued changes until ctx ends.
func (x *sampleIndex) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.wake:
		}
		x.qmu.Lock()
		batch := x.pending
		x.pending = nil
		x.qmu.Unlock()
		for _, c := range batch {
			x.apply(c)
			x.qmu.Lock()
			x.applied++
			close(x.progress)
			x.progress = make(chan struct{})
			x.qmu.Unlock()
		}
	}
}

// apply decodes c's records (no lock held) and folds them in.
func (x *sampleIndex) apply(c sampleChange) {
	decode := *x.decode.Load()
	decoded := make([]*model.UsageSample, len(c.recs))
	for i, r := range c.recs {
		if r.value != nil && (x.own == nil || !x.own(r.key)) {
			if s, err := decode(r.value); err == nil {
				decoded[i] = s
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if c.reset {
		x.hosts, x.vms, x.byKey = map[string]sampleRef{}, map[string]sampleRef{}, map[string]*model.UsageSample{}
	}
	for i, r := range c.recs {
		if old := x.byKey[r.key]; old != nil {
			x.drop(old)
			delete(x.byKey, r.key)
		}
		if decoded[i] != nil {
			x.byKey[r.key] = decoded[i]
			x.add(decoded[i])
		}
	}
}

// drop forgets what the index took from s (mu held).
func (x *sampleIndex) drop(s *model.UsageSample) {
	for _, h := range s.Hosts {
		if ref, ok := x.hosts[h.Host]; ok && ref.s == s {
			delete(x.hosts, h.Host)
		}
		for _, v := range h.VMs {
			if ref, ok := x.vms[v.Key]; ok && ref.s == s {
				delete(x.vms, v.Key)
			}
		}
	}
}

// add indexes s's hosts and VMs where it is the freshest (mu held).
func (x *sampleIndex) add(s *model.UsageSample) {
	for hi, h := range s.Hosts {
		if ref, ok := x.hosts[h.Host]; ok && ref.s.Hosts[ref.hi].Seen.After(h.Seen) {
			continue // another server saw the host more recently
		}
		x.hosts[h.Host] = sampleRef{s: s, hi: hi}
		for vi, v := range h.VMs {
			x.vms[v.Key] = sampleRef{s: s, hi: hi, vi: vi}
		}
	}
}

// read runs fn with the index's read lock held.
func (x *sampleIndex) read(fn func(*sampleIndex)) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	fn(x)
}

// caughtUp waits until the index holds every change queued before the
// call (after a consistent read of the cache: every sample up to its
// revision).
func (x *sampleIndex) caughtUp(ctx context.Context) error {
	x.qmu.Lock()
	target := x.queued
	for x.applied < target {
		ch := x.progress
		x.qmu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		x.qmu.Lock()
	}
	x.qmu.Unlock()
	return nil
}
