package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// BenchmarkSchedulingCommits measures placements committed per second by
// one leader on the in-memory store (the store round trip is ~free here,
// so this is the controller's own overhead: cache, Placer, transaction).
func BenchmarkSchedulingCommits(b *testing.B) {
	for name, placer := range placers() {
		b.Run(name, func(b *testing.B) { benchCommits(b, placer) })
	}
}

func benchCommits(b *testing.B, newPlacer func() Placer) {
	const hosts, vms = 100, 500
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b)
		setupBench(b, e, hosts, vms)
		cfg := e.config("bench", nil)
		cfg.Placer = newPlacer()
		m := New(cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		b.StartTimer()
		start := time.Now()
		go func() { defer close(done); _ = m.runControllers(ctx, m.newTerm()) }()
		for placedCount(b, e) < vms {
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		b.StopTimer()
		cancel()
		<-done
		_ = e.st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(vms*b.N)/total.Seconds(), "placements/s")
}

func setupBench(b *testing.B, e *env, hosts, vms int) {
	ctx := context.Background()
	for i := range hosts {
		name := fmt.Sprintf("h%03d", i)
		if _, err := e.repo.UpsertHost(ctx, name, func(h *model.Host, _ bool) error {
			h.State, h.Capacity, h.LastSeen = model.HostReady, model.Resources{CPUs: 32, Memory: 128 * model.GiB, Disk: model.TiB}, e.clock.Now()
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range vms {
		vm := &model.VM{Meta: model.Meta{Name: vmName(i), Project: "p"}, Spec: model.VMSpec{VCPUs: 1 + i%4, Memory: model.Bytes(1+i%8) * model.GiB}}
		if _, err := e.repo.CreateVM(ctx, vm); err != nil {
			b.Fatal(err)
		}
	}
}

func placedCount(b *testing.B, e *env) int {
	vms, _, err := e.repo.ListVMs(context.Background(), "")
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, vm := range vms {
		if vm.Status.Host != "" {
			n++
		}
	}
	return n
}

// BenchmarkCommitPath measures the scheduling controller's commit path
// alone: N pending VMs in the cache, one scheduling pass places them all
// (Placer, the re-check before commit, the transaction on the in-memory
// store, the cache update). No goroutines and no polling: the figure is
// the pass's own cost per placement.
func BenchmarkCommitPath(b *testing.B) {
	for _, tc := range []struct{ hosts, vms int }{{100, 500}, {2000, 2000}} {
		b.Run(fmt.Sprintf("hosts=%d/vms=%d", tc.hosts, tc.vms), func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				e := newEnv(b)
				setupBench(b, e, tc.hosts, tc.vms)
				cfg := e.config("bench", nil)
				cfg.Placer = NewSchedulerPlacer()
				m := New(cfg)
				r := newReconciler(m, m.newTerm(), newCache(m.log))
				r.repaired = true
				syncCache(b, e, r.c)
				ctx := context.Background()
				b.StartTimer()
				start := time.Now()
				if err := r.schedule(ctx); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				b.StopTimer()
				if n := placedCount(b, e); n != tc.vms {
					b.Fatalf("placed %d of %d", n, tc.vms)
				}
				_ = e.st.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(tc.vms*b.N)/total.Seconds(), "placements/s")
		})
	}
}

// syncCache fills c from the store, as the watches would.
func syncCache(b *testing.B, e *env, c *cache) {
	for _, src := range c.sources() {
		kvs, _, err := e.st.List(context.Background(), src.prefix)
		if err != nil {
			b.Fatal(err)
		}
		c.mu.Lock()
		src.reset(kvs)
		c.mu.Unlock()
	}
}
