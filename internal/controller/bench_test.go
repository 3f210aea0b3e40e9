package controller

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/store"
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
	createBench(b, e, 0, vms)
}

// createBench creates n pending VMs numbered from first.
func createBench(b *testing.B, e *env, first, n int) {
	ctx := context.Background()
	for i := first; i < first+n; i++ {
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
// the pass's own cost per placement. "term-start" is the first pass of a
// term (whatever a term builds once counts against it), "steady" a pass
// of a term that already placed N VMs.
func BenchmarkCommitPath(b *testing.B) {
	for _, tc := range []struct{ hosts, vms int }{{100, 500}, {2000, 2000}} {
		for _, steady := range []bool{false, true} {
			pass := map[bool]string{false: "term-start", true: "steady"}[steady]
			b.Run(fmt.Sprintf("hosts=%d/vms=%d/%s", tc.hosts, tc.vms, pass), func(b *testing.B) {
				benchCommitPath(b, tc.hosts, tc.vms, steady)
			})
		}
	}
}

func benchCommitPath(b *testing.B, hosts, vms int, steady bool) {
	var total, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b)
		setupBench(b, e, hosts, vms)
		cfg := e.config("bench", nil)
		cfg.Placer = NewSchedulerPlacer()
		m := New(cfg)
		r := newReconciler(m, m.newTerm(), newCache(m.log))
		r.repaired = true
		syncCache(b, e, r.c)
		ctx := context.Background()
		want := vms
		if steady {
			if err := r.schedule(ctx); err != nil {
				b.Fatal(err)
			}
			createBench(b, e, vms, vms)
			syncCache(b, e, r.c, store.VMsPrefix) // as the VMs' watch would: hosts and allocations are current
			want += vms
		}
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		if err := r.schedule(ctx); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		cpu += cpuTime() - cpu0
		b.StopTimer()
		if n := placedCount(b, e); n != want {
			b.Fatalf("placed %d of %d", n, want)
		}
		_ = e.st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(vms*b.N)/total.Seconds(), "placements/s")
	// CPU time (all threads) per placement: on a shared machine it
	// varies far less than wall time with what else runs.
	b.ReportMetric(float64(cpu.Microseconds())/float64(vms*b.N), "cpu-us/placement")
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// syncCache fills c from the store, as the watches would (only the
// sources of prefixes, when given).
func syncCache(b *testing.B, e *env, c *cache, prefixes ...string) {
	for _, src := range c.sources() {
		if len(prefixes) > 0 && !slices.Contains(prefixes, src.prefix) {
			continue
		}
		kvs, _, err := e.st.List(context.Background(), src.prefix)
		if err != nil {
			b.Fatal(err)
		}
		c.mu.Lock()
		src.reset(kvs)
		c.mu.Unlock()
	}
}

// BenchmarkGateCheck measures what the gate adds to a placement on a warm
// term (its view kept current, the decision re-checked with every
// filter, the committed allocation taken into the view), without the
// transaction itself: compare with BenchmarkCommitPath's cost per
// placement.
func BenchmarkGateCheck(b *testing.B) {
	for _, hosts := range []int{100, 2000} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			e := newEnv(b)
			setupBench(b, e, hosts, 0)
			m := New(e.config("bench", nil))
			r := newReconciler(m, m.newTerm(), newCache(m.log))
			syncCache(b, e, r.c)
			g := r.gate
			g.mu.Lock()
			defer g.mu.Unlock()
			if err := g.sync(); err != nil {
				b.Fatal(err)
			}
			vm := &model.VM{Meta: model.Meta{Name: "x", Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB}}
			req := scheduler.Request{Key: vm.Key(), Spec: &vm.Spec}
			names := sortedKeys(g.shapes)
			i := 0
			for b.Loop() {
				host := names[i%len(names)]
				i++
				r.c.putAlloc(g.allocs[host], g.allocs[host].Revision+1) // a commit's journal entry
				if err := g.sync(); err != nil {
					b.Fatal(err)
				}
				if why := g.sched.CheckOn(g.snap, req, host); why != "" {
					b.Fatal(why)
				}
			}
		})
	}
}
