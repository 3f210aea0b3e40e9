package controller

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// hangingPower is an IPMI that does not answer: PowerOff blocks until
// released (or for 30 s at most, so a broken test still ends).
type hangingPower struct {
	blocked atomic.Bool
	calls   atomic.Int64
	release chan struct{}
}

func (p *hangingPower) PowerOff(ctx context.Context, _ model.Host) error {
	p.calls.Add(1)
	p.blocked.Store(true)
	defer p.blocked.Store(false)
	select {
	case <-p.release:
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
	}
	return nil
}

func (p *hangingPower) PowerOn(context.Context, model.Host) error { return nil }

// TestSlowPowerCommandDelaysOnlyPower: the power controller's IPMI call
// hangs while 1,000 VMs are created; every one of them is placed while
// the call is still blocked. Before issue 11 the controllers ran one
// after another in one loop, and placement waited for the power command.
func TestSlowPowerCommandDelaysOnlyPower(t *testing.T) {
	e := newEnv(t)
	g := &greenEnv{env: e}
	set := model.DefaultBalanceSettings()
	set.Mode = model.BalanceOff
	set.Power = model.PowerSettings{Standby: true, MinHostsOn: 1, HeadroomPercent: 20, IdleSeconds: 10}
	g.putSettings(set)
	e.hostTTL = 3600 // the agents stay alive across the clock step below
	for i := range 20 {
		e.addHost(fmt.Sprintf("h%02d", i), 64, 512*model.GiB, nil)
	}
	power := &hangingPower{release: make(chan struct{})}
	defer close(power.release)
	cfg := e.config("a", nil)
	cfg.Power = power
	cfg.Placer = NewSchedulerPlacer()
	cfg.LeaseTTL = time.Hour
	m, _ := e.start(cfg)
	eventually(t, "a leads", m.IsLeader)
	// Fake time passes until the power controller, having seen the hosts
	// empty, puts one to standby (at most 10 minutes: the agents' leases
	// last an hour).
	steps := 0
	eventually(t, "a power-off hangs", func() bool {
		if power.blocked.Load() {
			return true
		}
		if steps < 600 {
			e.clock.Step(time.Second)
			steps++
			for i := range 20 { // the agents renew (host HA)
				e.beat(fmt.Sprintf("h%02d", i))
			}
		}
		return false
	})

	const n = 1000
	ctx := context.Background()
	for b := 0; b < n; b += 50 {
		batch := make([]*model.VM, 50)
		for i := range batch {
			batch[i] = &model.VM{Meta: model.Meta{Name: fmt.Sprintf("vm%04d", b+i)},
				Spec: model.VMSpec{VCPUs: 1 + i%4, Memory: model.Bytes(1+i%4) * model.GiB, Power: model.PowerRunning}}
		}
		if _, err := e.repo.CreateVMs(ctx, "p", batch); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "1,000 VMs placed", func() bool { return placedVMs(e) == n })
	if !power.blocked.Load() || power.calls.Load() != 1 {
		t.Fatalf("the power command returned (blocked %v, calls %d) before placement finished: the test proves nothing",
			power.blocked.Load(), power.calls.Load())
	}
	e.checkAllocations()
}

func placedVMs(e *env) int {
	vms, _, err := e.repo.ListVMs(context.Background(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, vm := range vms {
		if vm.Status.Host != "" {
			n++
		}
	}
	return n
}
