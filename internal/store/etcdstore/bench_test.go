package etcdstore_test

import (
	"context"
	"testing"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/store/storetest"
)

// BenchmarkEmbedded measures an embedded member with the settings of
// production (fsync on, default raft timings).
func BenchmarkEmbedded(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		s, err := etcdstore.StartEmbedded(context.Background(), etcdstore.Config{DataDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}
