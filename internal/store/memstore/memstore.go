// Package memstore is an in-memory store.Store for unit tests and the
// simulator. It keeps a bounded history of changes so watches can resume
// from a past revision, and expires leases against an injected clock.
// It imports only the standard library and internal/store.
package memstore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// defaultHistoryLimit is how many change events are kept for resuming
// watches.
const defaultHistoryLimit = 100000

type lease struct {
	ttl     time.Duration
	expires time.Time
	keys    map[string]bool
}

type watcher struct {
	prefix string
	minRev int64 // events before this revision are not delivered
	ch     chan store.WatchResponse
	ctx    context.Context
	// queue holds events not yet delivered; a goroutine drains it so a
	// slow reader never blocks writers.
	mu     sync.Mutex
	queue  []store.WatchEvent
	signal chan struct{}
}

// Store is an in-memory store.Store.
type Store struct {
	mu       sync.Mutex
	now      func() time.Time
	rev      int64
	data     map[string]store.KV
	history  []store.WatchEvent
	firstRev int64 // oldest revision still in history
	histMax  int   // history is trimmed to half when it grows past this
	leases   map[store.LeaseID]*lease
	nextID   store.LeaseID
	watchers map[*watcher]bool
	closed   bool
	stop     chan struct{}
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock used for lease expiry.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// New returns an empty store. It runs a goroutine that expires leases
// until Close.
func New(opts ...Option) *Store {
	s := &Store{
		now:      time.Now,
		data:     map[string]store.KV{},
		leases:   map[store.LeaseID]*lease{},
		watchers: map[*watcher]bool{},
		stop:     make(chan struct{}),
		firstRev: 1,
		histMax:  defaultHistoryLimit,
	}
	for _, o := range opts {
		o(s)
	}
	go s.expireLoop()
	return s
}

var _ store.Store = (*Store)(nil)

func (s *Store) expireLoop() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.ExpireLeases()
		}
	}
}

// ExpireLeases deletes the keys of every lease past its expiry now. Tests
// with a fake clock call it after stepping the clock.
func (s *Store) ExpireLeases() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	now := s.now()
	for id, l := range s.leases {
		if now.After(l.expires) {
			s.revokeLocked(id)
		}
	}
}

func (s *Store) revokeLocked(id store.LeaseID) {
	l, ok := s.leases[id]
	if !ok {
		return
	}
	delete(s.leases, id)
	if len(l.keys) == 0 {
		return
	}
	rev := s.rev + 1
	keys := make([]string, 0, len(l.keys))
	for k := range l.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var evs []store.WatchEvent
	for _, k := range keys {
		if kv, ok := s.data[k]; ok && kv.Lease == id {
			delete(s.data, k)
			evs = append(evs, store.WatchEvent{Type: store.EventDelete, KV: store.KV{Key: k, Value: kv.Value, CreateRev: kv.CreateRev, ModRev: rev}, Rev: rev})
		}
	}
	if len(evs) > 0 { // like etcd, the revision moves only on a change
		s.rev = rev
	}
	s.publishLocked(evs)
}

func (s *Store) checkOpen(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return store.ErrClosed
	}
	return nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return store.KV{}, err
	}
	kv, ok := s.data[key]
	if !ok {
		return store.KV{}, fmt.Errorf("%w: %s", store.ErrNotFound, key)
	}
	return copyKV(kv), nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return nil, 0, err
	}
	var out []store.KV
	for k, kv := range s.data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, copyKV(kv))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, s.rev, nil
}

func copyKV(kv store.KV) store.KV {
	kv.Value = append([]byte(nil), kv.Value...)
	return kv
}

func (s *Store) condHolds(c store.Cond) bool {
	kv, ok := s.data[c.Key]
	switch c.Kind {
	case store.Exists:
		return ok
	case store.Absent:
		return !ok
	default:
		if c.Rev == 0 {
			return !ok
		}
		return ok && kv.ModRev == c.Rev
	}
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return false, 0, err
	}
	for _, c := range conds {
		if !s.condHolds(c) {
			return false, s.rev, nil
		}
	}
	for _, op := range ops {
		if op.Kind == store.OpPut && op.Lease != 0 {
			if _, ok := s.leases[op.Lease]; !ok {
				return false, s.rev, fmt.Errorf("%w: %d", store.ErrNoLease, op.Lease)
			}
		}
	}
	rev := s.rev + 1
	var evs []store.WatchEvent
	for _, op := range ops {
		old, had := s.data[op.Key]
		if had && old.Lease != 0 {
			if l, ok := s.leases[old.Lease]; ok {
				delete(l.keys, op.Key)
			}
		}
		switch op.Kind {
		case store.OpPut:
			kv := store.KV{Key: op.Key, Value: append([]byte(nil), op.Value...), ModRev: rev, CreateRev: rev, Lease: op.Lease}
			if had {
				kv.CreateRev = old.CreateRev
			}
			s.data[op.Key] = kv
			if op.Lease != 0 {
				s.leases[op.Lease].keys[op.Key] = true
			}
			evs = append(evs, store.WatchEvent{Type: store.EventPut, KV: copyKV(kv), Rev: rev})
		case store.OpDelete:
			if had {
				delete(s.data, op.Key)
				evs = append(evs, store.WatchEvent{Type: store.EventDelete, KV: store.KV{Key: op.Key, Value: old.Value, CreateRev: old.CreateRev, ModRev: rev}, Rev: rev})
			}
		}
	}
	if len(evs) > 0 { // like etcd, the revision moves only on a change
		s.rev = rev
	}
	s.publishLocked(evs)
	return true, s.rev, nil
}

func (s *Store) publishLocked(evs []store.WatchEvent) {
	if len(evs) == 0 {
		return
	}
	s.history = append(s.history, evs...)
	if len(s.history) > s.histMax {
		drop := len(s.history) - s.histMax/2
		// Never keep half of a revision: a watch resumed from it would
		// miss part of a transaction.
		for drop < len(s.history) && s.history[drop].Rev == s.history[drop-1].Rev {
			drop++
		}
		s.dropHistory(drop)
	}
	for w := range s.watchers {
		w.push(evs)
	}
}

// dropHistory forgets the first n events of history; watches can then
// resume only from the revision after the last one dropped.
func (s *Store) dropHistory(n int) {
	if n <= 0 {
		return
	}
	s.firstRev = s.history[n-1].Rev + 1
	s.history = append([]store.WatchEvent(nil), s.history[n:]...)
}

// Compact forgets the history before rev, as etcd's compaction does:
// watches from an older revision then fail with store.ErrCompacted.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return err
	}
	if rev > s.rev {
		return fmt.Errorf("memstore: compact: revision %d is in the future (now %d)", rev, s.rev)
	}
	n := sort.Search(len(s.history), func(i int) bool { return s.history[i].Rev >= rev })
	s.dropHistory(n)
	if s.firstRev < rev {
		s.firstRev = rev
	}
	return nil
}

func (w *watcher) push(evs []store.WatchEvent) {
	w.mu.Lock()
	for _, e := range evs {
		if e.Rev >= w.minRev && strings.HasPrefix(e.KV.Key, w.prefix) {
			w.queue = append(w.queue, e)
		}
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64) <-chan store.WatchResponse {
	w := &watcher{prefix: prefix, minRev: fromRev, ch: make(chan store.WatchResponse, 16), ctx: ctx, signal: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		go func() { w.ch <- store.WatchResponse{Err: store.ErrClosed}; close(w.ch) }()
		return w.ch
	}
	if fromRev > 0 {
		if fromRev < s.firstRev {
			s.mu.Unlock()
			go func() {
				w.ch <- store.WatchResponse{Err: fmt.Errorf("%w: revision %d", store.ErrCompacted, fromRev)}
				close(w.ch)
			}()
			return w.ch
		}
		var past []store.WatchEvent
		for _, e := range s.history {
			if e.Rev >= fromRev {
				past = append(past, e)
			}
		}
		w.push(past)
	}
	s.watchers[w] = true
	s.mu.Unlock()
	go s.runWatcher(w)
	return w.ch
}

func (s *Store) runWatcher(w *watcher) {
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
		close(w.ch)
	}()
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		if len(q) > 0 {
			// deliver grouped by revision, like etcd
			for len(q) > 0 {
				n := 1
				for n < len(q) && q[n].Rev == q[0].Rev {
					n++
				}
				select {
				case w.ch <- store.WatchResponse{Events: q[:n]}:
				case <-w.ctx.Done():
					return
				case <-s.stop:
					return
				}
				q = q[n:]
			}
			continue
		}
		select {
		case <-w.signal:
		case <-w.ctx.Done():
			return
		case <-s.stop:
			return
		}
	}
}

// Grant implements store.Store.
func (s *Store) Grant(ctx context.Context, ttlSeconds int64) (store.LeaseID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return 0, err
	}
	if ttlSeconds <= 0 {
		return 0, fmt.Errorf("memstore: lease ttl must be positive, got %d", ttlSeconds)
	}
	s.nextID++
	ttl := time.Duration(ttlSeconds) * time.Second
	s.leases[s.nextID] = &lease{ttl: ttl, expires: s.now().Add(ttl), keys: map[string]bool{}}
	return s.nextID, nil
}

// KeepAlive implements store.Store.
func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return err
	}
	l, ok := s.leases[id]
	if !ok || s.now().After(l.expires) {
		s.revokeLocked(id)
		return fmt.Errorf("%w: %d", store.ErrNoLease, id)
	}
	l.expires = s.now().Add(l.ttl)
	return nil
}

// Revoke implements store.Store.
func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return err
	}
	if _, ok := s.leases[id]; !ok {
		return fmt.Errorf("%w: %d", store.ErrNoLease, id)
	}
	s.revokeLocked(id)
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.stop)
	return nil
}
