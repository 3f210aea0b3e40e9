package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// Bench runs the reference benchmarks of a store: sequential and
// parallel unconditional puts, a compare-and-swap put, and List of
// 10,000 keys of 1 KiB (mean and p99 latency).
func Bench(b *testing.B, newStore func(b *testing.B) store.Store) {
	b.Run("TxnPut", func(b *testing.B) { benchPut(b, newStore(b), false) })
	b.Run("TxnPutParallel", func(b *testing.B) { benchPut(b, newStore(b), true) })
	b.Run("TxnCAS", func(b *testing.B) { benchCAS(b, newStore(b)) })
	b.Run("List10k", func(b *testing.B) { benchList(b, newStore(b), 10000) })
}

func benchPut(b *testing.B, s store.Store, parallel bool) {
	ctx := context.Background()
	val := make([]byte, 512)
	var n atomic.Int64
	put := func() {
		i := n.Add(1)
		if _, _, err := s.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("/bench/put/%09d", i%4096), val)}); err != nil {
			b.Error(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	if parallel {
		b.SetParallelism(8) // 8 writers per core, like concurrent API calls
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				put()
			}
		})
	} else {
		for b.Loop() {
			put()
		}
	}
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "puts/s")
}

func benchCAS(b *testing.B, s store.Store) {
	ctx := context.Background()
	key := "/bench/cas"
	ok, rev, err := s.Txn(ctx, nil, []store.Op{store.Put(key, []byte("0"))})
	if err != nil || !ok {
		b.Fatal(ok, err)
	}
	for b.Loop() {
		ok, rev, err = s.Txn(ctx, []store.Cond{store.IfRev(key, rev)}, []store.Op{store.Put(key, []byte("x"))})
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

func benchList(b *testing.B, s store.Store, n int) {
	ctx := context.Background()
	val := make([]byte, 1024)
	const batch = 100 // below etcd's default limit of 128 ops per txn
	for i := 0; i < n; i += batch {
		ops := make([]store.Op, 0, batch)
		for j := i; j < i+batch && j < n; j++ {
			ops = append(ops, store.Put(fmt.Sprintf("/bench/list/%06d", j), val))
		}
		if _, _, err := s.Txn(ctx, nil, ops); err != nil {
			b.Fatal(err)
		}
	}
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		kvs, _, err := s.List(ctx, "/bench/list/")
		lat = append(lat, time.Since(t0))
		if err != nil || len(kvs) != n {
			b.Fatalf("list: %d keys, %v", len(kvs), err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
