package etcdstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// startAlone starts a one-member embedded cluster on plain http with
// fast raft timers, and a second client of it that writes.
func startAlone(t *testing.T) (s, w *etcdstore.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{DataDir: t.TempDir(), UnsafeNoFsync: true, Plaintext: true,
		HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, connect(t, s.Endpoints())
}

func put(t *testing.T, s *etcdstore.Store, key string) int64 {
	t.Helper()
	_, rev, err := s.Txn(context.Background(), nil, []store.Op{store.Put(key, []byte("v"))})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// On a member alone in its cluster, a consistent read's revision comes
// without a read index once one read index has been applied: with the
// member's apply held and a write committed but not applied, the read
// index would wait (before: Revision waited until its context ended),
// the revision read answers, at least every acknowledged write.
func TestRevisionAloneNeedsNoReadIndex(t *testing.T) {
	t.Parallel()
	s, w := startAlone(t)
	ctx := context.Background()
	acked := put(t, w, "/rr/a")
	if got, err := s.Revision(ctx); err != nil || got < acked {
		t.Fatalf("first Revision = %d, %v; want ≥ %d", got, err, acked)
	}
	n := etcdstore.ReadIndexes(s)
	release := etcdstore.HoldApply(s)
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	pending := make(chan int64, 1)
	go func() {
		_, rev, _ := w.Txn(ctx, nil, []store.Op{store.Put("/rr/b", []byte("v"))})
		pending <- rev
	}()
	for etcdstore.Unapplied(s) == 0 {
		time.Sleep(time.Millisecond)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	got, err := s.Revision(rctx)
	cancel()
	release()
	held = false
	if err != nil {
		t.Fatalf("Revision with a write committed and not applied: %v (it waited for the read index)", err)
	}
	if got < acked {
		t.Fatalf("Revision = %d, below the acknowledged write's %d", got, acked)
	}
	if d := etcdstore.ReadIndexes(s) - n; d != 0 {
		t.Fatalf("%d read index(es) after the first", d)
	}
	rev := <-pending
	if got, err := s.Revision(ctx); err != nil || got < rev {
		t.Fatalf("after the held write (%d): Revision = %d, %v", rev, got, err)
	}
}

// Every write acknowledged before Revision is in its answer: writers
// through the member's own store and through another client, each
// reading the revision after its write, concurrently; after the first
// read index none is needed.
func TestRevisionAloneSeesAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	s, w := startAlone(t)
	ctx := context.Background()
	put(t, s, "/rr/first")
	if _, err := s.Revision(ctx); err != nil {
		t.Fatal(err)
	}
	n := etcdstore.ReadIndexes(s)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		writer := []*etcdstore.Store{s, w}[g%2]
		wg.Go(func() {
			for i := range 100 {
				_, rev, err := writer.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("/rr/%d/%d", g, i%8), []byte("v"))})
				if err != nil {
					errs <- err
					return
				}
				got, err := s.Revision(ctx)
				if err != nil || got < rev {
					errs <- fmt.Errorf("writer %d, write %d at %d: Revision = %d, %v", g, i, rev, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if d := etcdstore.ReadIndexes(s) - n; d != 0 {
		t.Fatalf("%d read indexes for 1,600 reads of a member alone", d)
	}
}
