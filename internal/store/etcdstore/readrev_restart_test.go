package etcdstore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/store/etcdstore/etcdtest"
)

// backendRev is the highest revision in the database of a stopped
// member: what it had applied to disk, not what its WAL holds.
func backendRev(t *testing.T, dataDir string) int64 {
	t.Helper()
	be := backend.NewDefaultBackend(zap.NewNop(), filepath.Join(dataDir, "member", "snap", "db"))
	defer be.Close()
	tx := be.ReadTx()
	tx.RLock()
	defer tx.RUnlock()
	var rev int64
	err := tx.UnsafeForEach(schema.Key, func(k, _ []byte) error {
		rev = max(rev, int64(binary.BigEndian.Uint64(k[:8])))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// A member killed -9 while writes go on restarts with acknowledged
// writes in its WAL that its database lacks (the database commits every
// 100 ms): its first consistent read after the start takes the read
// index, and no read answers below the last write acknowledged before
// the kill. (The old path always took the read index; etcd 3.7 also
// applies the WAL's committed entries before the member is ready, so
// this guards the fast path's rule, first read through the read index,
// rather than a failure seen before.)
func TestRevisionAfterRestartWithUnappliedEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd process")
	}
	t.Parallel()
	c := etcdtest.Start(t, 1)
	m := c.Members[0]
	w := connect(t, c.Endpoints())
	var acked atomic.Int64
	go func() {
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, rev, err := w.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("/restart/%d", i%100), []byte("v"))})
			cancel()
			if err != nil {
				return
			}
			acked.Store(rev)
		}
	}()
	for acked.Load() < 300 {
		time.Sleep(time.Millisecond)
	}
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	last := acked.Load()
	inDB := backendRev(t, m.DataDir)
	t.Logf("last acknowledged revision %d, in the database %d", last, inDB)
	if inDB >= last {
		t.Logf("the kill came just after a database commit: the restart has nothing to replay")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{DataDir: m.DataDir, Name: m.Name, ClientURL: m.ClientURL, PeerURL: m.PeerURL,
		Plaintext: true, UnsafeNoFsync: true, HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		got, err := s.Revision(ctx)
		if err != nil || got < last {
			t.Fatalf("read %d after the restart: Revision = %d, %v; want ≥ %d", i, got, err, last)
		}
		if n := etcdstore.ReadIndexes(s); n != 1 {
			t.Fatalf("read %d after the restart: %d read indexes so far, want 1 (the first)", i, n)
		}
	}
}
