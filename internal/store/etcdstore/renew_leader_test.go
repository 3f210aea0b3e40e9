package etcdstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// threeMembers starts three embedded members of one cluster in this
// process (fsync as asked) and returns their stores.
func threeMembers(tb testing.TB, noFsync bool) []*etcdstore.Store {
	tb.Helper()
	ctx := context.Background()
	cfg := func(c etcdstore.Config) etcdstore.Config {
		c.UnsafeNoFsync = noFsync
		c.HeartbeatInterval, c.ElectionTimeout = 20*time.Millisecond, 200*time.Millisecond
		c.StartTimeout = 30 * time.Second
		return c
	}
	dir0 := tb.TempDir()
	first, err := etcdstore.StartEmbedded(ctx, cfg(etcdstore.Config{DataDir: dir0, Name: "m0", PeerURL: peerURL(tb)}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { first.Close() })
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	go promoteLoop(pctx, first)
	return growTo(tb, first, filepath.Join(dir0, "tls"), 3, cfg)
}

// leaderAndFollower returns the store whose member leads raft and one
// whose member follows.
func leaderAndFollower(tb testing.TB, stores []*etcdstore.Store) (leader, follower *etcdstore.Store) {
	tb.Helper()
	for range 100 {
		id, err := stores[0].RaftLeader(context.Background())
		if err == nil && id != 0 {
			for _, s := range stores {
				if s.Self().ID == id {
					leader = s
				} else if follower == nil {
					follower = s
				}
			}
			if leader != nil {
				return leader, follower
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatal("no raft leader among the three members")
	return nil, nil
}

// TestRenewalsGoToTheLeader renews leases through a follower's store:
// each renewal must be answered by the member leading raft itself (not
// forwarded by the follower over HTTP), and when that member stops, the
// lease must stay alive through the election and be renewed on the new
// leader.
func TestRenewalsGoToTheLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	t.Parallel()
	stores := threeMembers(t, true)
	leader, follower := leaderAndFollower(t, stores)
	ctx := context.Background()
	id, err := follower.Grant(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := follower.KeepAlive(ctx, id); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		if by := etcdstore.RenewedBy(follower); by != leader.Self().ID {
			t.Fatalf("renewal %d through the follower %x was answered by %x, want the leader %x",
				i, follower.Self().ID, by, leader.Self().ID)
		}
	}

	// Stop the leader's member; renew every 300 ms (a tenth of the TTL
	// as the servers do a third) for 4 s: the lease must never be found
	// gone, and must end renewed on the new leader.
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	var last error
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		last = follower.KeepAlive(rctx, id)
		cancel()
		if errors.Is(last, store.ErrNoLease) {
			t.Fatalf("the lease lapsed across the leader change: %v", last)
		}
	}
	if last != nil {
		t.Fatalf("renewals still fail 4 s after the leader stopped: %v", last)
	}
	newLeader, err := follower.RaftLeader(ctx)
	if err != nil || newLeader == 0 || newLeader == leader.Self().ID {
		t.Fatalf("new leader %x (%v), old %x", newLeader, err, leader.Self().ID)
	}
	if err := follower.KeepAlive(ctx, id); err != nil {
		t.Fatal(err)
	}
	if by := etcdstore.RenewedBy(follower); by != newLeader {
		t.Fatalf("after the leader change renewals are answered by %x, want the new leader %x", by, newLeader)
	}
}

// BenchmarkRenewThroughFollower renews 1,000 leases from 64 goroutines
// (the fleet harness's beats in flight) through a follower's store of
// three embedded members with fsync on, sent to the leader (via-leader)
// or to the local member, which forwards each over HTTP (forwarded, as
// before), with the store otherwise idle or under writes (8 writers
// putting a key each in a loop through the leader, as grants and
// placements do). cpu-µs/renewal (idle only) is the whole process's CPU
// (the three members and the client) a renewal.
func BenchmarkRenewThroughFollower(b *testing.B) {
	stores := threeMembers(b, false)
	leader, follower := leaderAndFollower(b, stores)
	ctx := context.Background()
	ids := make([]store.LeaseID, 1000)
	for i := range ids {
		var err error
		if ids[i], err = follower.Grant(ctx, 60); err != nil {
			b.Fatal(err)
		}
	}
	for _, load := range []string{"idle", "writes"} {
		for _, mode := range []struct {
			name string
			on   bool
		}{{"via-leader", true}, {"forwarded", false}} {
			b.Run(load+"/"+mode.name, func(b *testing.B) {
				etcdstore.RenewViaLeader(follower, mode.on)
				if err := follower.KeepAlive(ctx, ids[0]); err != nil {
					b.Fatal(err)
				}
				if load == "writes" {
					stop := writeLoad(b, leader, 8)
					defer stop()
				}
				// under writes the process's CPU is mostly the writers'
				renewAll(b, follower, ids, load == "idle")
			})
		}
	}
}

// writeLoad puts keys through s from n goroutines until stop is called.
func writeLoad(b *testing.B, s *etcdstore.Store, n int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			key := "/bench/w" + strconv.Itoa(w)
			for ctx.Err() == nil {
				_, _, _ = s.Txn(ctx, nil, []store.Op{store.Put(key, []byte("v"))})
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// renewAll renews b.N leases from 64 goroutines and reports the CPU a
// renewal, the rate and the p99 latency.
func renewAll(b *testing.B, s *etcdstore.Store, ids []store.LeaseID, reportCPU bool) {
	ctx := context.Background()
	cpu0 := processCPU(b)
	start := time.Now()
	b.ResetTimer()
	var (
		wg   sync.WaitGroup
		next = make(chan int)
		errs = make(chan error, 1)
		lat  = make([]time.Duration, b.N)
	)
	for range 64 {
		wg.Go(func() {
			for i := range next {
				t0 := time.Now()
				err := s.KeepAlive(ctx, ids[i%len(ids)])
				lat[i] = time.Since(t0)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
	b.StopTimer()
	wall := time.Since(start)
	cpu := processCPU(b) - cpu0
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	slices.Sort(lat)
	if reportCPU {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/renewal")
	}
	b.ReportMetric(float64(b.N)/wall.Seconds(), "renewals/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
