package watchcache

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// gatedRevs is a store whose Revision takes the revision when it
// begins (as etcd's read index does) and, while gated, answers only
// when released.
type gatedRevs struct {
	store.Store
	reads atomic.Int32
	began chan int64
	mu    sync.Mutex
	gate  chan struct{}
}

func (g *gatedRevs) Revision(ctx context.Context) (int64, error) {
	_, rev, err := g.Store.List(ctx, "/none")
	g.reads.Add(1)
	g.began <- rev
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return rev, err
}

// A request never joins a read that began before it came: a write
// acknowledged between that read's start and the request would be
// missing from its answer. Requests that come while a read is in flight
// share the next one, which begins after all of them came.
func TestStoreRevJoinsOnlyReadsBegunAfterIt(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	gate := make(chan struct{})
	st := &gatedRevs{Store: mem, began: make(chan int64, 8), gate: gate}
	c := New(st, "/r/", nil, &Table{Prefix: "/r/a/"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	first := make(chan int64, 1)
	go func() {
		rev, err := c.StoreRev(ctx, "/r/x")
		if err != nil {
			t.Error(err)
		}
		first <- rev
	}()
	began := <-st.began // the first read is in flight, at this revision
	written := put(t, st, "/r/a/1", "acknowledged")
	const later = 50
	revs := make(chan int64, later)
	for range later {
		go func() {
			rev, err := c.StoreRev(ctx, "/r/x")
			if err != nil {
				t.Error(err)
			}
			revs <- rev
		}()
	}
	// every request is parked before the first read answers
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.reads.mu.Lock()
		n := 0
		for i, r := range []*revRead{c.reads.cur, c.reads.next} {
			if r != nil && (i == 0 || r != c.reads.cur) {
				n += r.callers
			}
		}
		c.reads.mu.Unlock()
		if n == later+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests wait for a read", n, later+1)
		}
		time.Sleep(time.Millisecond)
	}
	st.mu.Lock()
	st.gate = nil
	st.mu.Unlock()
	close(gate)
	if got := <-first; got != began {
		t.Fatalf("the first request read %d, want %d", got, began)
	}
	for range later {
		if got := <-revs; got < written {
			t.Fatalf("a request that came after the write at %d read revision %d (it joined a read begun before it came)", written, got)
		}
	}
	if n := st.reads.Load(); n != 2 {
		t.Fatalf("%d reads of the store's revision for %d requests, want 2 (the first, one shared by the rest)", n, later+1)
	}
	if _, err := c.Consistent(ctx, "/r/x"); err != nil {
		t.Fatal(err)
	}
	if got := c.Rev(); got < written {
		t.Fatalf("after Consistent the cache is at %d, before the write at %d", got, written)
	}
}

// A WaitRev that gives up leaves no waiter behind; the others are woken
// by the advance that reaches their revision.
func TestWaitRevWakesAtItsRevision(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	c := New(mem, "/r/", nil, &Table{Prefix: "/r/a/"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	now := c.Rev()
	short, scancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer scancel()
	if err := c.WaitRev(short, now+100); err == nil {
		t.Fatal("WaitRev of a revision never written returned without error")
	}
	done := make(chan error, 1)
	go func() { done <- c.WaitRev(ctx, now+2) }()
	for {
		c.mu.RLock()
		n := len(c.waiters)
		c.mu.RUnlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	put(t, mem, "/r/a/1", "one")
	for c.Rev() < now+1 {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("woken before its revision: %v", err)
	default:
	}
	put(t, mem, "/r/a/2", "two")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.waiters) != 0 {
		t.Fatalf("%d waiters left", len(c.waiters))
	}
}
