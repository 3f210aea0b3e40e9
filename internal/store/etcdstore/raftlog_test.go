package etcdstore_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// TestRaftLogHeldInMemoryIsBounded: the embedded member keeps the raft
// entries a slow follower may still need in memory (etcd's
// SnapshotCatchUpEntries), and a burst of large transactions (a group of
// placements is one entry of tens of KB) stayed there until as many new
// entries pushed it out — at rest, hours. etcd's default of 5,000 entries
// held 265 MB of one server's live heap at 10,000 hosts (docs/scale.md,
// eighth round); the member keeps EmbeddedSnapshotCatchUpEntries.
func TestRaftLogHeldInMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 125 MB through an embedded member")
	}
	ctx := context.Background()
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{DataDir: t.TempDir(), UnsafeNoFsync: true, DefragMinFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const entries, size = 4000, 32 << 10
	val := strings.Repeat("x", size)
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	for i := range entries {
		// one key over and over: the store holds one value, the raft
		// log every entry
		if _, _, err := s.Txn(ctx, nil, []store.Op{store.Put("/k", fmt.Appendf([]byte(val), "%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	held := int64(heap()) - int64(before)
	// the entries etcd may keep: the catch-up entries and up to 100 more
	// between its in-memory snapshots, half again for their copies and
	// indexes, 16 MiB for the rest; and in any case under half of what
	// was written (etcd's default kept all of it)
	limit := min(int64(etcdstore.EmbeddedSnapshotCatchUpEntries+100)*size*3/2+16<<20, entries*size/2)
	t.Logf("%d entries of %d KiB written, %.1f MiB of heap held after (limit %.1f MiB)", entries, size>>10, float64(held)/(1<<20), float64(limit)/(1<<20))
	if held > limit {
		t.Fatalf("the member holds %.1f MiB after %d entries of %d KiB, want at most %.1f MiB (%d catch-up entries)",
			float64(held)/(1<<20), entries, size>>10, float64(limit)/(1<<20), etcdstore.EmbeddedSnapshotCatchUpEntries)
	}
}
