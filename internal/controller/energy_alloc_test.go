package controller

import (
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/energy"
	"github.com/vpool/vpool/internal/model"
)

// TestEnergyPassAllocations: the energy pass, which runs every second
// and walks every host and running VM, reads the cached hosts without
// copying them, makes each VM's key once and reuses one buffer of shares
// for every host (it copied every host, made a slice a host and each key
// twice where the servers' usage is read: 100,000 running VMs made
// 200,000 keys a second).
func TestEnergyPassAllocations(t *testing.T) {
	s := powerSettings()
	s.Power.Standby = false
	g := newGreenEnv(t, s)
	const hosts, perHost = 4, 10
	for h := range hosts {
		g.addHost(fmt.Sprintf("h%d", h), 64, 256*model.GiB, nil)
	}
	for i := range hosts * perHost {
		g.putVM(fmt.Sprintf("v%02d", i), fmt.Sprintf("h%d", i%hosts), 1, 20, nil)
	}
	g.must(g.r.energyStep) // starts the ledger
	g.clock.Step(time.Second)
	g.must(g.r.energyStep)
	if n := len(g.r.c.runningByHost()); n != hosts {
		t.Fatalf("%d hosts with running VMs, want %d", n, hosts)
	}
	g.r.m.cfg.Usage = fixedUsage{}
	allocs := testing.AllocsPerRun(20, func() { g.r.bookEnergy(1) })
	perVM := allocs / (hosts * perHost)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range 20 {
		g.r.bookEnergy(1)
	}
	runtime.ReadMemStats(&m1)
	bytesPerVM := float64(m1.TotalAlloc-m0.TotalAlloc) / 20 / (hosts * perHost)
	t.Logf("%.0f allocations a pass, %.2f and %.0f bytes a running VM", allocs, perVM, bytesPerVM)
	// it copied every host and made a map of the live ones: 91 bytes a
	// running VM at 10 VMs a host with each key made once (34 now)
	if bytesPerVM > 60 {
		t.Fatalf("the energy pass allocates %.0f bytes a running VM, want at most 60", bytesPerVM)
	}
	// a host's ledger entries and the like; no key a VM (the cache keeps
	// them: 1.65 a VM at 10 VMs a host when each pass made every key, 2.8
	// when it made them twice)
	if perVM > 1.0 {
		t.Fatalf("the energy pass allocates %.2f times a running VM, want at most 1", perVM)
	}
	// a view that answers batches (the server) books the same ledger,
	// allocating no more
	g.r.m.cfg.Usage = batchUsage{}
	if batched := testing.AllocsPerRun(20, func() { g.r.bookEnergy(1) }); batched > allocs {
		t.Fatalf("the energy pass allocates %.0f times with a batching view, %.0f without", batched, allocs)
	}
}

// TestEnergyPassBatchedUsage: the energy pass books the same ledger
// whether the usage view answers VM by VM or a host's VMs at once
// (controller.VMUsageBatch, which the server implements), including VMs
// the view knows nothing of and VMs whose record is fresher than the
// view's report.
func TestEnergyPassBatchedUsage(t *testing.T) {
	book := func(v UsageView) energyLedgerState {
		s := powerSettings()
		s.Power.Standby = false
		g := newGreenEnv(t, s)
		for h := range 3 {
			g.addHost(fmt.Sprintf("h%d", h), 64, 256*model.GiB, nil)
		}
		for i := range 30 {
			g.putVM(fmt.Sprintf("v%02d", i), fmt.Sprintf("h%d", i%3), 1, float64(i), nil)
		}
		g.r.m.cfg.Usage = v
		g.must(g.r.energyStep)
		for range 3 {
			g.clock.Step(time.Second)
			g.must(g.r.energyStep)
		}
		return energyLedgerState(g.r.nrg.ledger.State())
	}
	one, batched := book(sparseUsage{}), book(batchUsage{sparseUsage{}})
	if len(one.VMs) != 30 || !reflect.DeepEqual(one, batched) {
		t.Fatalf("booked VM by VM %+v, in batches %+v", one, batched)
	}
}

type energyLedgerState energy.LedgerState

// sparseUsage knows the usage of the VMs whose name ends in an even
// digit: measured after the record's, or (ending in 0, 4 or 8) at the
// zero time, not after the record's (the records here were never
// observed).
type sparseUsage struct{}

func (sparseUsage) HostUsage(string) (model.HostUsage, time.Time, int, bool) {
	return model.HostUsage{}, time.Time{}, 0, false
}

func (sparseUsage) VMUsage(key string) (model.VMUsage, time.Time, bool) {
	d := key[len(key)-1] - '0'
	if d%2 == 1 {
		return model.VMUsage{}, time.Time{}, false
	}
	at := time.Now().Add(time.Hour)
	if d%4 == 0 {
		at = time.Time{}
	}
	return model.VMUsage{CPUPercent: float64(d) * 7}, at, true
}

// batchUsage answers batches from a UsageView's VMUsage.
type batchUsage struct{ UsageView }

func (b batchUsage) VMUsages(keys []string, us []model.VMUsage, at []time.Time) {
	v := b.UsageView
	if v == nil {
		v = fixedUsage{}
	}
	for i, k := range keys {
		if u, t, ok := v.VMUsage(k); ok {
			us[i], at[i] = u, t
		}
	}
}

// fixedUsage answers every VM's usage as measured now.
type fixedUsage struct{}

func (fixedUsage) HostUsage(string) (model.HostUsage, time.Time, int, bool) {
	return model.HostUsage{}, time.Time{}, 0, false
}

func (fixedUsage) VMUsage(string) (model.VMUsage, time.Time, bool) {
	return model.VMUsage{CPUPercent: 30}, time.Now(), true
}

// TestEnergyStepFor: the energy pass books every second up to 1,000
// hosts, then as often as the hosts beat (1 ms a host), at most every
// 10 s.
func TestEnergyStepFor(t *testing.T) {
	for _, tc := range []struct {
		hosts int
		want  time.Duration
	}{{0, time.Second}, {3, time.Second}, {1000, time.Second}, {2500, 2500 * time.Millisecond}, {10000, 10 * time.Second}, {50000, 10 * time.Second}} {
		if got := energyStepFor(tc.hosts); got != tc.want {
			t.Errorf("%d hosts: a step of %s, want %s", tc.hosts, got, tc.want)
		}
	}
}
