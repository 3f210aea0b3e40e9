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
		go func() { defer close(done); _ = m.runControllers(ctx, &term{}) }()
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
