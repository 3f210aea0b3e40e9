package memstore_test

import (
	"testing"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/store/storetest"
)

// The contract's WatchCompacted case runs only against a Compactor (it
// skips otherwise); memstore must stay one, so that case always runs.
var _ storetest.Compactor = (*memstore.Store)(nil)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := memstore.New()
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func BenchmarkMemstore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		s := memstore.New()
		b.Cleanup(func() { s.Close() })
		return s
	})
}
