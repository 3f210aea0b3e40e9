package controller

import (
	"math"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// The power controller counts a host's idle time from the store (when
// its allocation emptied), not from when the leader first saw it: a new
// leader after a failover puts an idle host to standby when the old one
// would have, not a whole idle time later.
func TestStandbyTimingAcrossAFailover(t *testing.T) {
	standbyAt := func(failover bool) time.Duration {
		g := newGreenEnv(t, powerSettings())
		start := g.clock.Now()
		g.addHost("h1", 4, 16*model.GiB, nil)
		g.addHost("h2", 4, 16*model.GiB, nil)
		g.placeVM("a1", "h1", 2, 50)
		g.syncHostUsage()
		for step := 0; step < 200; step++ {
			if failover && step == 40 {
				g.restart() // 40 s into h2's minute of idleness
			}
			g.must(g.r.powerStep)
			if g.host("h2").State == model.HostStandby {
				return g.clock.Now().Sub(start)
			}
			g.clock.Step(time.Second)
		}
		t.Fatal("h2 never went to standby")
		return 0
	}
	want, got := standbyAt(false), standbyAt(true)
	if got != want {
		t.Fatalf("after a failover h2 went to standby %s after it emptied, without one %s", got, want)
	}
}

// The energy ledger is written every EnergyPersistInterval; a new leader
// books again from the last write, so a failover leaves no hole in it.
func TestEnergyLedgerAcrossAFailover(t *testing.T) {
	total := func(failover bool) float64 {
		s := powerSettings()
		s.Power.Standby = false
		g := newGreenEnv(t, s)
		g.addHost("h1", 2, 16*model.GiB, map[string]string{model.LabelPowerModel: "ml110g5"})
		g.placeVM("a1", "h1", 2, 100)
		g.setHostUsage("h1", 50)
		for sec := 0; sec <= 300; sec += 5 {
			if failover && sec == 150 {
				g.restart() // 30 s after the last write of the ledger
			}
			g.must(g.r.energyStep)
			g.clock.Step(5 * time.Second)
		}
		return g.r.nrg.ledger.State().Total
	}
	want, got := total(false), total(true)
	if math.Abs(got-want) > 1e-6*want {
		t.Fatalf("energy booked with a failover: %.1f J, without: %.1f J", got, want)
	}
}
