package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// collect reads events from ch until it has n, failing on a terminal
// error, a closed channel or after waitFor.
func collect(t *testing.T, ch <-chan store.WatchResponse, n int) []store.WatchEvent {
	t.Helper()
	var evs []store.WatchEvent
	timeout := time.After(waitFor)
	for len(evs) < n {
		select {
		case resp, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d of %d events", len(evs), n)
			}
			if resp.Err != nil {
				t.Fatalf("watch error after %d of %d events: %v", len(evs), n, resp.Err)
			}
			evs = append(evs, resp.Events...)
		case <-timeout:
			t.Fatalf("got %d of %d watch events in %v", len(evs), n, waitFor)
		}
	}
	return evs
}

func watchCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(ctxT(t))
	t.Cleanup(cancel)
	return ctx
}

func testWatchFromNow(t *testing.T, s store.Store, p string) {
	put(t, s, p+"w/before", "old") // before the watch: not seen
	ch := s.Watch(watchCtx(t), p+"w/", 0)
	put(t, s, p+"other", "x") // outside the prefix: not seen
	r1 := put(t, s, p+"w/a", "1")
	put(t, s, p+"wx", "sibling") // shares the prefix's letters only
	r2 := put(t, s, p+"w/a", "2")
	r3 := del(t, s, p+"w/a")
	last := put(t, s, p+"w/z", "end")
	evs := collect(t, ch, 4)
	if len(evs) != 4 {
		t.Fatalf("got %d events, want 4: %+v", len(evs), evs)
	}
	checkEvent(t, evs[0], store.EventPut, p+"w/a", "1")
	checkEvent(t, evs[1], store.EventPut, p+"w/a", "2")
	checkEvent(t, evs[2], store.EventDelete, p+"w/a", "2")
	checkEvent(t, evs[3], store.EventPut, p+"w/z", "end")
	for i, want := range []int64{r1, r2, r3, last} {
		if evs[i].Rev != want {
			t.Errorf("event %d at revision %d, want %d", i, evs[i].Rev, want)
		}
	}
	if evs[0].KV.CreateRev != r1 || evs[1].KV.CreateRev != r1 {
		t.Errorf("CreateRev of puts = %d, %d; want %d", evs[0].KV.CreateRev, evs[1].KV.CreateRev, r1)
	}
}

func testWatchFromPast(t *testing.T, s store.Store, p string) {
	put(t, s, p+"a", "1")
	r2 := put(t, s, p+"b", "2")
	put(t, s, p+"zz-outside", "x")
	del(t, s, p+"a")
	// Resume from r2: sees b, the delete of a, and what comes next.
	ch := s.Watch(watchCtx(t), p, r2)
	put(t, s, p+"c", "3")
	evs := collect(t, ch, 4)
	checkEvent(t, evs[0], store.EventPut, p+"b", "2")
	checkEvent(t, evs[1], store.EventPut, p+"zz-outside", "x")
	checkEvent(t, evs[2], store.EventDelete, p+"a", "1")
	checkEvent(t, evs[3], store.EventPut, p+"c", "3")
	if evs[0].Rev != r2 {
		t.Errorf("first resumed event at %d, want %d", evs[0].Rev, r2)
	}
}

func testWatchFromFuture(t *testing.T, s store.Store, p string) {
	rev := put(t, s, p+"k", "0")
	ch := s.Watch(watchCtx(t), p, rev+3)
	put(t, s, p+"k", "1")
	put(t, s, p+"k", "2")
	r3 := put(t, s, p+"k", "3")
	evs := collect(t, ch, 1)
	if evs[0].Rev != r3 || evs[0].Rev != rev+3 {
		t.Fatalf("first event at revision %d, want %d (the watch's start)", evs[0].Rev, rev+3)
	}
	checkEvent(t, evs[0], store.EventPut, p+"k", "3")
}

func testWatchTxnOneRevision(t *testing.T, s store.Store, p string) {
	put(t, s, p+"old", "o")
	ch := s.Watch(watchCtx(t), p, 0)
	ok, rev, err := s.Txn(ctxT(t), nil, []store.Op{store.Put(p+"x", []byte("1")), store.Put(p+"y", []byte("2")), store.Delete(p + "old")})
	if err != nil || !ok {
		t.Fatalf("txn: ok=%v err=%v", ok, err)
	}
	evs := collect(t, ch, 3)
	for _, ev := range evs {
		if ev.Rev != rev {
			t.Errorf("event on %s at revision %d, want the txn's %d", ev.KV.Key, ev.Rev, rev)
		}
	}
	checkEvent(t, evs[2], store.EventDelete, p+"old", "o")
}

func testWatchClosesOnCancel(t *testing.T, s store.Store, p string) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx, p, 0)
	put(t, s, p+"k", "v")
	collect(t, ch, 1)
	cancel()
	timeout := time.After(waitFor)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("watch channel still open %v after cancel", waitFor)
		}
	}
}

func testWatchCompacted(t *testing.T, s store.Store, p string) {
	c, ok := s.(Compactor)
	if !ok {
		t.Skip("store does not implement storetest.Compactor")
	}
	old := put(t, s, p+"k", "1")
	now := put(t, s, p+"k", "2")
	if err := c.Compact(ctxT(t), now); err != nil {
		t.Fatal(err)
	}
	ch := s.Watch(watchCtx(t), p, old)
	select {
	case resp, ok := <-ch:
		if !ok || !errors.Is(resp.Err, store.ErrCompacted) {
			t.Fatalf("watch from compacted revision: %+v (open=%v), want ErrCompacted", resp, ok)
		}
	case <-time.After(waitFor):
		t.Fatal("no answer from a watch at a compacted revision")
	}
	// The watch ends after its terminal error.
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("watch sent more after its terminal error")
		}
	case <-time.After(waitFor):
		t.Fatal("watch not closed after its terminal error")
	}
}

func testLeaseRevoke(t *testing.T, s store.Store, p string) {
	ctx := ctxT(t)
	id, err := s.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.KeepAlive(ctx, id); err != nil {
		t.Fatalf("keepalive of a live lease: %v", err)
	}
	ok, _, err := s.Txn(ctx, nil, []store.Op{store.PutWithLease(p+"a", []byte("1"), id), store.PutWithLease(p+"b", []byte("2"), id)})
	if err != nil || !ok {
		t.Fatalf("put with lease: ok=%v err=%v", ok, err)
	}
	put(t, s, p+"plain", "stays")
	if kv := mustGet(t, s, p+"a"); kv.Lease != id {
		t.Fatalf("key lease = %d, want %d", kv.Lease, id)
	}
	ch := s.Watch(watchCtx(t), p, 0)
	if err := s.Revoke(ctx, id); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	evs := collect(t, ch, 2)
	checkEvent(t, evs[0], store.EventDelete, p+"a", "1")
	checkEvent(t, evs[1], store.EventDelete, p+"b", "2")
	mustAbsent(t, s, p+"a")
	mustAbsent(t, s, p+"b")
	mustGet(t, s, p+"plain")
	if err := s.KeepAlive(ctx, id); !errors.Is(err, store.ErrNoLease) {
		t.Errorf("keepalive after revoke: %v, want ErrNoLease", err)
	}
	if err := s.Revoke(ctx, id); !errors.Is(err, store.ErrNoLease) {
		t.Errorf("second revoke: %v, want ErrNoLease", err)
	}
	if _, _, err := s.Txn(ctx, nil, []store.Op{store.PutWithLease(p+"c", []byte("3"), id)}); !errors.Is(err, store.ErrNoLease) {
		t.Errorf("put with revoked lease: %v, want ErrNoLease", err)
	}
}

func testLeaseExpiry(t *testing.T, s store.Store, p string) {
	ctx := ctxT(t)
	id, err := s.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.Txn(ctx, nil, []store.Op{store.PutWithLease(p+"k", []byte("v"), id)}); err != nil || !ok {
		t.Fatalf("put with lease: ok=%v err=%v", ok, err)
	}
	deadline := time.Now().Add(waitFor)
	for {
		_, err := s.Get(ctx, p+"k")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("key of a lease of 1 s still there after %v", waitFor)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.KeepAlive(ctx, id); !errors.Is(err, store.ErrNoLease) {
		t.Errorf("keepalive after expiry: %v, want ErrNoLease", err)
	}
}

func testLeaseKeepAliveHolds(t *testing.T, s store.Store, p string) {
	ctx := ctxT(t)
	id, err := s.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.Txn(ctx, nil, []store.Op{store.PutWithLease(p+"k", []byte("v"), id)}); err != nil || !ok {
		t.Fatalf("put with lease: ok=%v err=%v", ok, err)
	}
	// Renew every 200 ms for 3 s, longer than the TTL: the key stays.
	for i := 0; i < 15; i++ {
		time.Sleep(200 * time.Millisecond)
		if err := s.KeepAlive(ctx, id); err != nil {
			t.Fatalf("keepalive %d: %v", i, err)
		}
	}
	mustGet(t, s, p+"k")
	if err := s.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func testLeaseBadTTL(t *testing.T, s store.Store, _ string) {
	for _, ttl := range []int64{0, -5} {
		if _, err := s.Grant(ctxT(t), ttl); err == nil {
			t.Errorf("Grant(%d) succeeded", ttl)
		}
	}
}

func testClosed(t *testing.T, s store.Store, p string) {
	put(t, s, p+"k", "v")
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Get(ctxT(t), p+"k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("get after close: %v, want ErrClosed", err)
	}
	if _, _, err := s.Txn(ctxT(t), nil, []store.Op{store.Put(p+"k", nil)}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("txn after close: %v, want ErrClosed", err)
	}
	ch := s.Watch(context.Background(), p, 0)
	select {
	case resp, ok := <-ch:
		if ok && !errors.Is(resp.Err, store.ErrClosed) {
			t.Errorf("watch after close: %+v, want ErrClosed or a closed channel", resp)
		}
	case <-time.After(waitFor):
		t.Error("watch after close neither failed nor closed")
	}
}
