package memstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestLeaseExpiryFakeClock(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	s := New(WithClock(clk.Now))
	defer s.Close()
	id, err := s.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Txn(ctx, nil, []store.Op{store.PutWithLease("/a", []byte("v"), id)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		step      time.Duration
		keepAlive bool
		wantKey   bool
	}{
		{"before ttl", 9 * time.Second, false, true},
		{"renewed", 0, true, true},
		{"ttl after renewal not reached", 9 * time.Second, false, true},
		{"past ttl", 2 * time.Second, false, false},
	}
	for _, tc := range tests {
		clk.Step(tc.step)
		if tc.keepAlive {
			if err := s.KeepAlive(ctx, id); err != nil {
				t.Fatalf("%s: keepalive: %v", tc.name, err)
			}
		}
		s.ExpireLeases()
		_, err := s.Get(ctx, "/a")
		if got := err == nil; got != tc.wantKey {
			t.Fatalf("%s: key present = %v, want %v (err %v)", tc.name, got, tc.wantKey, err)
		}
	}
	if err := s.KeepAlive(ctx, id); !errors.Is(err, store.ErrNoLease) {
		t.Fatalf("keepalive of expired lease: %v", err)
	}
}

// A lease past its TTL that the expiry loop has not reaped yet is dead
// for KeepAlive too.
func TestKeepAliveLateLease(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	s := New(WithClock(clk.Now))
	defer s.Close()
	id, err := s.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Txn(ctx, nil, []store.Op{store.PutWithLease("/a", []byte("v"), id)}); err != nil {
		t.Fatal(err)
	}
	clk.Step(6 * time.Second)
	if err := s.KeepAlive(ctx, id); !errors.Is(err, store.ErrNoLease) {
		t.Fatalf("keepalive past ttl: %v, want ErrNoLease", err)
	}
	if _, err := s.Get(ctx, "/a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("key of the dead lease: %v", err)
	}
}

// Trimming the history never keeps half of a transaction: a watch
// resumed from the oldest kept revision sees whole transactions.
func TestHistoryTrimKeepsWholeRevisions(t *testing.T) {
	ctx := context.Background()
	s := New()
	defer s.Close()
	s.histMax = 10
	// Transactions of 3 puts each: trimming to half of 10 would cut one.
	for i := 0; i < 6; i++ {
		ops := []store.Op{}
		for j := 0; j < 3; j++ {
			ops = append(ops, store.Put(fmt.Sprintf("/k/%d/%d", i, j), nil))
		}
		if _, _, err := s.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	first := s.firstRev
	counts := map[int64]int{}
	for _, e := range s.history {
		counts[e.Rev]++
	}
	s.mu.Unlock()
	for rev, n := range counts {
		if n != 3 {
			t.Fatalf("history keeps %d of the 3 events of revision %d", n, rev)
		}
	}
	if _, ok := counts[first]; !ok {
		t.Fatalf("firstRev %d not in history %v", first, counts)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if resp := <-s.Watch(wctx, "/", first-1); !errors.Is(resp.Err, store.ErrCompacted) {
		t.Fatalf("watch before the history: %+v, want ErrCompacted", resp)
	}
	resp := <-s.Watch(wctx, "/", first)
	if resp.Err != nil || len(resp.Events) != 3 {
		t.Fatalf("watch from the oldest revision: %+v, want its 3 events", resp)
	}
}
