package server

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/metering/meterstore"
	"github.com/vpool/vpool/internal/model"
)

// meterFixture stores two hosts (sites eu and us) and n VMs, two in
// three placed and running with NIC counters, one in five of those
// stopped, the rest pending.
func meterFixture(t *testing.T, n int) (*testServer, time.Time) {
	t.Helper()
	now := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	ts := startServer(t, nil, func(c *Config) { c.Clock = func() time.Time { return now } })
	ctx := context.Background()
	for i, site := range []string{"eu", "us"} {
		if _, err := ts.repo.UpsertHost(ctx, fmt.Sprintf("h%d", i), func(h *model.Host, _ bool) error {
			h.Labels, h.State, h.Capacity = map[string]string{model.SiteLabel: site}, model.HostReady, model.Resources{CPUs: 8, Memory: 16 * model.GiB}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	seedVMs(t, ts, "default", n)
	for i := range n {
		if i%3 == 0 {
			continue
		}
		if _, err := ts.repo.UpdateVM(ctx, "default", fmt.Sprintf("vm-%04d", i), func(vm *model.VM) error {
			vm.Status.Host, vm.Status.Phase = fmt.Sprintf("h%d", i%2), model.PhaseRunning
			vm.Status.Usage.NetRx, vm.Status.Usage.NetTx = int64(100*i), 50
			if i%5 == 0 {
				vm.Status.Phase = model.PhaseStopped
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return ts, now
}

// TestMeterSourceFromView: the view's source samples what StoreSource
// samples from the store (sites, placement, phases, NIC counters, with
// the heartbeats' newer counters overlaid), without decoding a VM: it
// allocates a fraction of what listing and decoding every record does.
func TestMeterSourceFromView(t *testing.T) {
	const n = 300
	ts, now := meterFixture(t, n)
	ctx := context.Background()
	// a heartbeat's newer counters for one VM (the hub, as beats keep them)
	ts.hub.beat("h1", now.Add(time.Second), 10, model.HostUsage{}, map[string]model.VMUsage{"default/vm-0001": {NetRx: 7000, NetTx: 1}})
	want, err := meterstore.StoreSource{Store: ts.st, Clock: func() time.Time { return now }, Usage: ts.Server}.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src := ts.MeterSource()
	got, err := src.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.VMs) != n || !reflect.DeepEqual(got, want) {
		t.Fatalf("view sample (%d VMs) differs from the store's (%d VMs)", len(got.VMs), len(want.VMs))
	}
	if got.VMs[1].NetBytes != 7001 || got.VMs[1].Site != "us" || !got.VMs[1].Running {
		t.Fatalf("vm-0001 sampled as %+v", got.VMs[1])
	}
	viewAllocs := testing.AllocsPerRun(3, func() { _, _ = src.Sample(ctx) }) / n
	storeAllocs := testing.AllocsPerRun(3, func() {
		_, _ = meterstore.StoreSource{Store: ts.st, Clock: func() time.Time { return now }, Usage: ts.Server}.Sample(ctx)
	}) / n
	t.Logf("allocations a VM: view %.1f, store %.1f", viewAllocs, storeAllocs)
	// listing and decoding every record: about 17 a VM on the memory store
	if viewAllocs > 4 {
		t.Fatalf("the view's source allocates %.1f times a VM, want at most 4 (the store's: %.1f)", viewAllocs, storeAllocs)
	}
}
