package etcdstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

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

// reads returns how many read indexes k revision reads of s took, and
// fails when one answers below atLeast.
func reads(t *testing.T, s *etcdstore.Store, k int, atLeast int64) int64 {
	t.Helper()
	n := etcdstore.ReadIndexes(s)
	for range k {
		got, err := s.Revision(context.Background())
		if err != nil || got < atLeast {
			t.Fatalf("Revision = %d, %v; want ≥ %d", got, err, atLeast)
		}
	}
	return etcdstore.ReadIndexes(s) - n
}

// As soon as the member is not alone — a learner added by another
// client, a member added through the store and promoted to a voter —
// every read takes the read index; once the other member is removed,
// one read index (begun alone) opens the fast path again. A member
// added and removed between two reads is no exception.
func TestRevisionNotAloneTakesReadIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two etcd members")
	}
	t.Parallel()
	ctx := context.Background()
	fastCfg := func(c etcdstore.Config) etcdstore.Config {
		c.UnsafeNoFsync, c.HeartbeatInterval, c.ElectionTimeout = true, 20*time.Millisecond, 200*time.Millisecond
		c.StartTimeout = 30 * time.Second
		return c
	}
	dir0 := t.TempDir()
	first, err := etcdstore.StartEmbedded(ctx, fastCfg(etcdstore.Config{DataDir: dir0, Name: "m0", PeerURL: peerURL(t)}))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	alone := func(step string) {
		t.Helper()
		rev := put(t, first, "/rr/"+step)
		// the first read after a change takes the read index (grant)
		if d := reads(t, first, 1, rev); d != 1 {
			t.Fatalf("%s: the first read took %d read indexes, want 1", step, d)
		}
		if d := reads(t, first, 20, rev); d != 0 {
			t.Fatalf("%s: alone, 20 reads took %d read indexes, want 0", step, d)
		}
	}
	notAlone := func(step string) {
		t.Helper()
		rev := put(t, first, "/rr/"+step)
		if d := reads(t, first, 5, rev); d != 5 {
			t.Fatalf("%s: not alone, 5 reads took %d read indexes, want 5", step, d)
		}
	}
	alone("start")

	// a learner added by another client of the cluster, never started
	lt := first.LocalTLS()
	tlsCfg, err := etcdstore.ClientTLS(lt.CACert, lt.ClientCert, lt.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: first.Endpoints(), TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	added, err := cli.MemberAddAsLearner(ctx, []string{peerURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	notAlone("learner")
	if _, err := cli.MemberRemove(ctx, added.Member.ID); err != nil {
		t.Fatal(err)
	}
	alone("learner-removed")
	// added and removed with no read between: the membership seen by
	// the next read is the one of the grant, the change was not
	added, err = cli.MemberAddAsLearner(ctx, []string{peerURL(t)})
	if err == nil {
		_, err = cli.MemberRemove(ctx, added.Member.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	alone("learner-unseen")

	// a second member through the store, promoted to a voter
	pctx, stopPromote := context.WithCancel(ctx)
	defer stopPromote()
	go promoteLoop(pctx, first)
	stores := growTo(t, first, filepath.Join(dir0, "tls"), 2, fastCfg)
	for {
		ms, err := first.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 2 && !ms[0].Learner && !ms[1].Learner {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopPromote()
	notAlone("voter")
	// removed while it runs (it stops itself): the case of a voter
	// that may have applied entries the first had not
	// (etcd refuses until the voter has been connected for 5 s)
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := first.RemoveMember(ctx, stores[1].Self().ID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		notAlone("voter-remove-refused")
		time.Sleep(200 * time.Millisecond)
	}
	_ = stores[1].Close()
	alone("voter-removed")
}
