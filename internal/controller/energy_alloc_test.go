package controller

import (
	"fmt"
	"runtime"
	"testing"
	"time"

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
	// each VM's key (one allocation) and, a host, the host view's copy
	// and the like (1.7 a VM at 10 VMs a host; 2.8 before)
	if perVM > 2.2 {
		t.Fatalf("the energy pass allocates %.2f times a running VM, want at most 2.2", perVM)
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
