// Package watchcache mirrors prefixes of the store in memory, fed by one
// watch of their common root: each server answers lists, pages and the
// agents' long polls from it instead of asking etcd (a list of 100,000
// VMs, or 10,000 agents each watching the VM prefix, would cost etcd
// more than everything else together). Items keep the stored bytes as
// they are (a list writes them without decoding) and, when the table
// asks for it, a decoded object beside them.
//
// Reads are as fresh as the watch; Consistent waits until the cache has
// applied everything the store held when it was called (one small
// linearizable read, shared by the calls that came before it began:
// consistent.go), which gives read-your-writes across servers.
//
// It imports only internal/store and the standard library.
package watchcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// ErrNotSynced says the cache could not catch up in time (the store is
// unreachable, or the watch is being re-established).
var ErrNotSynced = errors.New("watchcache: not caught up with the store")

// Item is one cached key. Items are immutable: an update replaces the
// pointer, so a reader may keep one without holding any lock.
type Item struct {
	Key       string
	Value     []byte
	ModRev    int64
	CreateRev int64
	Lease     store.LeaseID
	// Obj is Table.Decode's result (nil without Decode, or when the value
	// did not decode).
	Obj any
}

// Table is one mirrored prefix. Prefixes of one cache must not overlap.
type Table struct {
	Prefix string
	// Decode, when set, makes Item.Obj. An error leaves Obj nil.
	Decode func(kv store.KV) (any, error)
	// Changed, when set, is called for each change with the cache's write
	// lock held (so it may keep indexes that readers read under
	// Cache.Read): old is nil for a new key, cur nil for a deleted one.
	Changed func(old, cur *Item, rev int64)
	// Reset, when set, is called with the write lock held after the
	// table was loaded afresh (first sync, or after the watch fell
	// behind a compaction); indexes are rebuilt from Each there.
	Reset func(rev int64)

	items    sorted
	listedAt int64 // events at or below it are already in the listing
}

// Len is the number of items (call under Cache.Read).
func (t *Table) Len() int { return t.items.len() }

// Get returns key's item or nil (call under Cache.Read).
func (t *Table) Get(key string) *Item { return t.items.get(key) }

// Each calls fn on every item with prefix above after, in key order,
// until fn returns false (call under Cache.Read).
func (t *Table) Each(prefix, after string, fn func(*Item) bool) {
	t.items.ascend(prefix, after, fn)
}

// Cache is a set of mirrored tables under one root prefix.
type Cache struct {
	st     store.Store
	root   string
	log    *slog.Logger
	tables []*Table

	// Observe, when set before Run, is called for every event the watch
	// brings, in tables or not (metrics of what writes the store).
	Observe func(ev store.WatchEvent)

	mu     sync.RWMutex
	rev    int64         // every event up to rev is applied
	tick   chan struct{} // closed and replaced whenever rev moves
	synced bool
	ready  chan struct{} // closed at the first sync

	waiters  []*revWaiter // WaitRev calls parked (under mu)
	reads    revReads     // StoreRev's shared reads (consistent.go)
	revReads atomic.Int64
}

// New returns a cache of tables under root; nothing is read until Run.
func New(st store.Store, root string, log *slog.Logger, tables ...*Table) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, t := range tables {
		if !strings.HasPrefix(t.Prefix, root) {
			panic(fmt.Sprintf("watchcache: table %s is not under %s", t.Prefix, root))
		}
	}
	return &Cache{st: st, root: root, log: log.With("component", "watchcache"), tables: tables,
		tick: make(chan struct{}), ready: make(chan struct{})}
}

// Read runs fn with the read lock held: tables and the indexes their
// hooks keep do not change meanwhile; rev is the revision they are at.
func (c *Cache) Read(fn func(rev int64)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fn(c.rev)
}

// Rev is the revision the cache has applied everything up to.
func (c *Cache) Rev() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// Run keeps the cache in sync until ctx ends or the store closes.
func (c *Cache) Run(ctx context.Context) error {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		from, err := c.load(ctx)
		if err != nil {
			if errors.Is(err, store.ErrClosed) || ctx.Err() != nil {
				return err
			}
			c.log.Warn("listing failed, retrying", "err", err)
			if !sleep(ctx, backoff(attempt)) {
				break
			}
			continue
		}
		attempt = 0
		err = c.follow(ctx, from)
		if errors.Is(err, store.ErrClosed) {
			return err
		}
	}
	return ctx.Err()
}

// load lists every table and replaces its contents; it returns the
// revision to watch from.
func (c *Cache) load(ctx context.Context) (int64, error) {
	type listing struct {
		kvs []store.KV
		rev int64
	}
	ls := make([]listing, len(c.tables))
	from := int64(0)
	for i, t := range c.tables {
		kvs, rev, err := c.st.List(ctx, t.Prefix)
		if err != nil {
			return 0, fmt.Errorf("watchcache: list %s: %w", t.Prefix, err)
		}
		ls[i] = listing{kvs, rev}
		if i == 0 || rev < from {
			from = rev
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, t := range c.tables {
		t.items = sorted{}
		t.listedAt = ls[i].rev
		for _, kv := range ls[i].kvs {
			t.items.put(t.item(kv))
		}
		if t.Reset != nil {
			t.Reset(ls[i].rev)
		}
	}
	c.advance(from)
	if !c.synced {
		c.synced = true
		close(c.ready)
	}
	return from + 1, nil
}

func (t *Table) item(kv store.KV) *Item {
	it := &Item{Key: kv.Key, Value: kv.Value, ModRev: kv.ModRev, CreateRev: kv.CreateRev, Lease: kv.Lease}
	if t.Decode != nil {
		if obj, err := t.Decode(kv); err == nil {
			it.Obj = obj
		}
	}
	return it
}

// follow applies the root's watch from revision from; it returns
// ErrCompacted (re-list), ErrClosed, or ctx's error. Other watch errors
// resume from the last applied revision.
func (c *Cache) follow(ctx context.Context, from int64) error {
	for attempt := 0; ; attempt++ {
		wctx, cancel := context.WithCancel(ctx)
		err := c.watch(wctx, from)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, store.ErrCompacted), errors.Is(err, store.ErrClosed):
			return err
		}
		if err != nil {
			c.log.Warn("watch broke, resuming", "err", err)
		}
		if !sleep(ctx, backoff(attempt)) {
			return ctx.Err()
		}
		from = c.Rev() + 1
	}
}

func (c *Cache) watch(ctx context.Context, from int64) error {
	for resp := range c.st.Watch(ctx, c.root, from) {
		if resp.Err != nil {
			return resp.Err
		}
		c.mu.Lock()
		rev := int64(0)
		for _, ev := range resp.Events {
			c.apply(ev)
			rev = max(rev, ev.Rev)
			if c.Observe != nil {
				c.Observe(ev)
			}
		}
		c.advance(rev)
		c.mu.Unlock()
	}
	return nil
}

// apply folds one event into its table (write lock held).
func (c *Cache) apply(ev store.WatchEvent) {
	t := c.table(ev.KV.Key)
	if t == nil || ev.Rev <= t.listedAt {
		return
	}
	var old, cur *Item
	if ev.Type == store.EventDelete {
		old = t.items.del(ev.KV.Key)
		if old == nil {
			return
		}
	} else {
		cur = t.item(ev.KV)
		old = t.items.put(cur)
	}
	if t.Changed != nil {
		t.Changed(old, cur, ev.Rev)
	}
}

func (c *Cache) table(key string) *Table {
	for _, t := range c.tables {
		if strings.HasPrefix(key, t.Prefix) {
			return t
		}
	}
	return nil
}

// advance moves the applied revision and wakes WaitRev (write lock held).
func (c *Cache) advance(rev int64) {
	if rev <= c.rev {
		return
	}
	c.rev = rev
	close(c.tick)
	c.tick = make(chan struct{})
	c.wake()
}

// Synced says whether the first listing is in the cache.
func (c *Cache) Synced() bool {
	select {
	case <-c.ready:
		return true
	default:
		return false
	}
}

// WaitSynced blocks until the first listing is in the cache.
func (c *Cache) WaitSynced(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotSynced, ctx.Err())
	}
}

// Changes returns a channel closed at the next applied revision, and the
// revision applied now (to wait for anything newer).
func (c *Cache) Changes() (<-chan struct{}, int64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tick, c.rev
}

func backoff(attempt int) time.Duration {
	return min(50*time.Millisecond<<min(attempt, 6), 2*time.Second)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
