package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// Revision is at least the revision of every write acknowledged before
// it, read in process from the embedded member and over gRPC by a
// client of the same member, whichever of the two wrote; with no write
// since, it is exactly the last write's.
func TestRevisionSeesAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{DataDir: t.TempDir(), UnsafeNoFsync: true, Plaintext: true,
		HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := etcdstore.Connect(ctx, s.Endpoints(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		writer := []*etcdstore.Store{s, c}[i%2]
		_, rev, err := writer.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("/r/%d", i), []byte("v"))})
		if err != nil {
			t.Fatal(err)
		}
		for name, reader := range map[string]*etcdstore.Store{"embedded": s, "client": c} {
			got, err := reader.Revision(ctx)
			if err != nil || got != rev {
				t.Fatalf("write %d at revision %d: %s reads revision %d, %v", i, rev, name, got, err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revision(ctx); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Revision of a closed store: %v, want ErrClosed", err)
	}
}
