package etcdstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/store/storetest"
)

// startFast starts an embedded member tuned for tests: no fsync and a
// short election timeout, so it is ready in a fraction of a second.
func startFast(t testing.TB) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{
		DataDir:           t.TempDir(),
		UnsafeNoFsync:     true,
		HeartbeatInterval: 10 * time.Millisecond,
		ElectionTimeout:   100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The contract's WatchCompacted case runs only against a Compactor (it
// skips otherwise); etcdstore must stay one, so that case always runs.
var _ storetest.Compactor = (*etcdstore.Store)(nil)

func TestContractEmbedded(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return startFast(t) })
}
