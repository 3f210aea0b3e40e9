package etcdstore_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// BenchmarkWatchLag measures what a consistent read of the watch cache
// waits for: another client writes, the store's Revision returns R, and
// the time until the watch of the embedded member has delivered R. The
// watch is the member's own in process (now) or over the member's gRPC
// client with TLS on loopback (before); busy=N runs N goroutines that
// each work 10 µs and sleep 1 ms, a server whose CPU is short and whose
// run queue is long, as at 10,000 hosts on two cores.
func BenchmarkWatchLag(b *testing.B) {
	for _, busy := range []int{0, 100} {
		for _, path := range []string{"in-process", "client"} {
			b.Run(fmt.Sprintf("busy=%d/%s", busy, path), func(b *testing.B) { benchWatchLag(b, busy, path == "client") })
		}
	}
}

func benchWatchLag(b *testing.B, busy int, overClient bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, tlsCfg := benchMember(ctx, b)
	if overClient {
		etcdstore.WatchOverClient(s)
	}
	w, err := etcdstore.Connect(ctx, s.Endpoints(), tlsCfg)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var seen atomic.Int64
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	ch := s.Watch(ctx, "/lag/", 0) // watching when it returns: before the first write
	go func() {
		for resp := range ch {
			for _, ev := range resp.Events {
				seen.Store(ev.Rev)
			}
			mu.Lock()
			cond.Broadcast()
			mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	for range busy {
		wg.Go(func() {
			for ctx.Err() == nil {
				for t := time.Now(); time.Since(t) < 10*time.Microsecond; {
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	value := make([]byte, 4096)
	lags := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := w.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("/lag/%d", i%64), value)}); err != nil {
			b.Fatal(err)
		}
		rev, err := s.Revision(ctx)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		mu.Lock()
		for seen.Load() < rev {
			cond.Wait()
		}
		mu.Unlock()
		lags = append(lags, time.Since(t0))
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "lag-p50-µs")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "lag-p99-µs")
}

// benchMember starts an embedded member without fsync for a benchmark
// (closed with it) and returns its client TLS configuration.
func benchMember(ctx context.Context, b *testing.B) (*etcdstore.Store, *tls.Config) {
	b.Helper()
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{DataDir: b.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	lt := s.LocalTLS()
	tlsCfg, err := etcdstore.ClientTLS(lt.CACert, lt.ClientCert, lt.ClientKey)
	if err != nil {
		b.Fatal(err)
	}
	return s, tlsCfg
}
