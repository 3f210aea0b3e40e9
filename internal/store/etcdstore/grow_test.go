package etcdstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// peerURL is a fixed loopback peer URL on a port free a moment ago.
func peerURL(t testing.TB) string {
	t.Helper()
	port, err := etcdstore.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return "https://127.0.0.1:" + strconv.Itoa(port)
}

// copyCA gives a member's TLS dir the CA of another's.
func copyCA(t testing.TB, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "ca.key"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// promoteLoop promotes started learners through s until ctx ends, as
// every vpool server does.
func promoteLoop(ctx context.Context, s *etcdstore.Store) {
	for ctx.Err() == nil {
		_, _ = s.PromoteStarted(ctx)
		time.Sleep(50 * time.Millisecond)
	}
}

// growTo adds members through first, one at a time, until there are n;
// each shares first's CA and writes a key through itself.
func growTo(t testing.TB, first *etcdstore.Store, caDir string, n int, fast func(etcdstore.Config) etcdstore.Config) []*etcdstore.Store {
	t.Helper()
	ctx := context.Background()
	stores := []*etcdstore.Store{first}
	for i := 1; i < n; i++ {
		name, peer, dir := "m"+strconv.Itoa(i), peerURL(t), t.TempDir()
		var (
			members []store.Member
			err     error
		)
		for {
			_, members, err = first.AddLearner(ctx, peer)
			if !errors.Is(err, etcdstore.ErrMembershipBusy) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
		copyCA(t, caDir, filepath.Join(dir, "tls"))
		s, err := etcdstore.StartEmbedded(ctx, fast(etcdstore.Config{DataDir: dir, Name: name, PeerURL: peer,
			InitialCluster: store.InitialCluster(members, name, peer), ClusterState: etcdstore.ClusterStateExisting}))
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
		if _, _, err := s.Txn(ctx, nil, []store.Op{store.Put("/grow/"+name, []byte("v"))}); err != nil {
			t.Fatalf("write through %s: %v", name, err)
		}
	}
	return stores
}

// TestGrowShrinkAndProbe grows a one-member cluster to three members,
// each added as a learner and promoted once started, writes through
// the new members, tells a stopped member from a live one, and removes
// a member.
func TestGrowShrinkAndProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	t.Parallel()
	ctx := context.Background()
	fast := func(c etcdstore.Config) etcdstore.Config {
		c.UnsafeNoFsync, c.HeartbeatInterval, c.ElectionTimeout = true, 20*time.Millisecond, 200*time.Millisecond
		c.StartTimeout = 30 * time.Second
		return c
	}
	dir0 := t.TempDir()
	first, err := etcdstore.StartEmbedded(ctx, fast(etcdstore.Config{DataDir: dir0, Name: "m0", PeerURL: peerURL(t)}))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	pctx, stopPromote := context.WithCancel(ctx)
	defer stopPromote()
	go promoteLoop(pctx, first)

	stores := growTo(t, first, filepath.Join(dir0, "tls"), 3, fast)
	ms, err := first.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("members %+v, want 3", ms)
	}
	for _, m := range ms {
		if m.Learner || m.Name == "" {
			t.Errorf("member %+v: want a started voter", m)
		}
	}
	if kvs, _, err := first.List(ctx, "/grow/"); err != nil || len(kvs) != 2 {
		t.Fatalf("first member lists %d keys (%v), want 2", len(kvs), err)
	}

	if first.MemberGone(ctx, "m1") {
		t.Error("a live member was reported gone")
	}
	if err := stores[2].Close(); err != nil {
		t.Fatal(err)
	}
	gone := false
	for i := 0; i < 50 && !gone; i++ {
		gone = first.MemberGone(ctx, "m2")
		time.Sleep(20 * time.Millisecond)
	}
	if !gone {
		t.Error("a stopped member was not reported gone")
	}
	if first.MemberGone(ctx, "nobody") {
		t.Error("an unknown member was reported gone")
	}
	if err := first.RemoveMember(ctx, stores[2].Self().ID); err != nil {
		t.Fatalf("remove m2: %v", err)
	}
	if ms, err = first.Members(ctx); err != nil || len(ms) != 2 {
		t.Fatalf("after removal: %+v, %v; want 2 members", ms, err)
	}
	if _, _, err := stores[1].Txn(ctx, nil, []store.Op{store.Put("/grow/after", []byte("v"))}); err != nil {
		t.Fatalf("write with 2 of 2 members: %v", err)
	}
}
