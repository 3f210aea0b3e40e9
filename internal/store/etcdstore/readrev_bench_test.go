package etcdstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// BenchmarkConsistentRev measures a consistent read's revision on an
// embedded member alone in its cluster (what the list's first page and
// GET vm wait for before the cache) while other clients write without
// pause: through etcd's read index and wait for apply (before), and
// the member's applied revision (now). writers=N clients each write
// 4 KiB values back to back over TLS on loopback; a read every
// millisecond (ns/op counts the pause: read the rev-* metrics).
func BenchmarkConsistentRev(b *testing.B) {
	for _, writers := range []int{0, 4} {
		for _, path := range []string{"read-index", "applied"} {
			b.Run(fmt.Sprintf("writers=%d/%s", writers, path), func(b *testing.B) { benchConsistentRev(b, writers, path == "read-index") })
		}
	}
}

func benchConsistentRev(b *testing.B, writers int, viaReadIndex bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, tlsCfg := benchMember(ctx, b)
	etcdstore.RevViaReadIndex(s, viaReadIndex)
	var wg sync.WaitGroup
	var wrote atomic.Int64
	value := make([]byte, 4096)
	for g := range writers {
		w, err := etcdstore.Connect(ctx, s.Endpoints(), tlsCfg)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, _, err := w.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("/rev/%d/%d", g, i%256), value)}); err == nil {
					wrote.Add(1)
				}
			}
		})
	}
	if _, err := s.Revision(ctx); err != nil { // the grant, on the new path
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	n0, w0, t0 := etcdstore.ReadIndexes(s), wrote.Load(), time.Now()
	b.ResetTimer()
	for range b.N {
		time.Sleep(time.Millisecond) // reads come as requests do, not back to back
		t := time.Now()
		if _, err := s.Revision(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	elapsed := time.Since(t0)
	readIndexes, writes := etcdstore.ReadIndexes(s)-n0, wrote.Load()-w0
	cancel()
	wg.Wait()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "rev-p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "rev-p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds())/1e3, "rev-max-µs")
	b.ReportMetric(float64(readIndexes)/float64(b.N), "readindex/op")
	b.ReportMetric(float64(writes)/elapsed.Seconds(), "writes/s")
}
