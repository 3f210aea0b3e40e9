package simulate

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"
)

// reference is the table: CloudSim 3.0.3 with the literature
// setup (energy kWh, migrations, SLAV in percent).
var reference = []struct {
	day              string
	vms              int
	dvfs             float64
	thrE, thrM, thrS float64
	lrE, lrM, lrS    float64
}{
	{"20110303", 1052, 764.96, 198.08, 27728, 0.00357, 167.83, 27649, 0.00432},
	{"20110306", 898, 618.28, 150.70, 21575, 0.00398, 127.98, 21661, 0.00497},
	{"20110309", 1061, 678.96, 162.20, 23376, 0.00395, 139.40, 24239, 0.00527},
	{"20110322", 1516, 956.81, 194.23, 28381, 0.00310, 172.88, 31376, 0.00473},
	{"20110325", 1078, 763.54, 173.04, 24712, 0.00336, 149.83, 26320, 0.00442},
}

func within(got, want, tol float64) bool { return math.Abs(got/want-1) <= tol }

// slavTolerance bounds SLAV against the reference (see the check).
const slavTolerance = 0.015

// wantPlacement: the literature's policies keep the literature's initial
// placement; vpool places with the server's scheduler.
var wantPlacement = map[string]string{
	"dvfs": PlacementFirstFit, "thr-mmt-0.8": PlacementPABFD, "lr-mmt-1.2": PlacementPABFD, "vpool": PlacementScheduler,
}

// TestLiteratureReproducesReference runs the five PlanetLab days with
// DVFS, THR-MMT-0.8 and LR-MMT-1.2 under the literature setup and checks
// the tolerances (energy and migrations ±10 %, DVFS ±2 %) and
// SLAV against the reference (±1.5 %, justified at the check); it
// also checks that vpool's policy, held to the server's placement rules,
// needs at most half of LR-MMT-1.2's migrations with no higher SLAV on
// every day. Energy is compared where both policies count memory
// (TestVPoolBeatsLRWhereMemoryCounts): in this setup a running VM asks
// CloudSim for no memory, so LR-MMT-1.2 puts on its hosts 2.3–2.7 times
// the memory they have on average, which no server allows (the policy's
// memory ratio is at most 3), while every vpool move passes the
// server's memory rule.
func TestLiteratureReproducesReference(t *testing.T) {
	if testing.Short() {
		t.Skip("replays five days (a few seconds)")
	}
	table := "| day | policy | energy kWh | SLAV % | migrations | wall s |\n|---|---|---|---|---|---|\n"
	for _, ref := range reference {
		t.Run(ref.day, func(t *testing.T) {
			tr := loadDay(t, ref.day)
			if len(tr.VMs) != ref.vms {
				t.Fatalf("%d VMs, want %d", len(tr.VMs), ref.vms)
			}
			res := map[string]*Result{}
			for _, p := range []string{"dvfs", "thr-mmt-0.8", "lr-mmt-1.2", "vpool"} {
				r, err := Run(context.Background(), tr, Config{Policy: p, Now: time.Now})
				if err != nil {
					t.Fatal(err)
				}
				res[p] = r
				if r.Placement != wantPlacement[p] {
					t.Errorf("%s placed with %q, want %q", p, r.Placement, wantPlacement[p])
				}
				table += fmt.Sprintf("| %s | %s | %.2f | %.7f | %d | %.2f |\n", ref.day, p, r.EnergyKWh, r.SLAV*100, r.Migrations, r.WallS)
			}
			check := func(what string, got, want, tol float64) {
				t.Helper()
				if !within(got, want, tol) {
					t.Errorf("%s = %.6g, reference %.6g (±%.1f %%)", what, got, want, tol*100)
				}
			}
			check("dvfs energy", res["dvfs"].EnergyKWh, ref.dvfs, 0.02)
			check("thr-mmt-0.8 energy", res["thr-mmt-0.8"].EnergyKWh, ref.thrE, 0.10)
			check("thr-mmt-0.8 migrations", float64(res["thr-mmt-0.8"].Migrations), ref.thrM, 0.10)
			check("lr-mmt-1.2 energy", res["lr-mmt-1.2"].EnergyKWh, ref.lrE, 0.10)
			check("lr-mmt-1.2 migrations", float64(res["lr-mmt-1.2"].Migrations), ref.lrM, 0.10)
			// SLAV (percent) within ±1.5 %. The issue sets no SLAV target,
			// so the bound is what the reproduction achieves plus a
			// margin: the reference prints three significant digits
			// (half a unit is 0.09–0.16 % of these values) and our
			// bookkeeping between events sums in another order than
			// CloudSim's (docs/simulation.md, "Remaining gap"), which
			// leaves SLAV 0.40–0.87 % below on all ten runs. 1.5 % is not
			// loose: copies 2 % longer put SLAV 3.8 % higher on 20110303
			// (measured) while energy and migrations stay within 0.03 %.
			check("thr-mmt-0.8 SLAV %", res["thr-mmt-0.8"].SLAV*100, ref.thrS, slavTolerance)
			check("lr-mmt-1.2 SLAV %", res["lr-mmt-1.2"].SLAV*100, ref.lrS, slavTolerance)
			vp, lr := res["vpool"], res["lr-mmt-1.2"]
			if !(vp.SLAV <= lr.SLAV) || !(2*vp.Migrations <= lr.Migrations) {
				t.Errorf("vpool does not beat lr-mmt-1.2: SLAV %.6f vs %.6f, migrations %d vs %d",
					vp.SLAV, lr.SLAV, vp.Migrations, lr.Migrations)
			}
		})
	}
	t.Log("\n" + table)
}

// TestVPoolBeatsLRWhereMemoryCounts runs the five PlanetLab days in the
// realistic setup, where every policy counts memory after start (and
// idle VMs stay), and checks that vpool — placed by the server's
// scheduler, every move passing the server's rules — beats LR-MMT-1.2
// on every day: less energy, SLAV no higher, at most half the
// migrations.
func TestVPoolBeatsLRWhereMemoryCounts(t *testing.T) {
	if testing.Short() {
		t.Skip("replays five days (a few seconds)")
	}
	table := "| day | policy | energy kWh | SLAV % | migrations | mean active hosts |\n|---|---|---|---|---|---|\n"
	for _, ref := range reference {
		t.Run(ref.day, func(t *testing.T) {
			tr := loadDay(t, ref.day)
			res := map[string]*Result{}
			for _, p := range []string{"lr-mmt-1.2", "vpool"} {
				r, err := Run(context.Background(), tr, Config{Setup: Realistic, Policy: p})
				if err != nil {
					t.Fatal(err)
				}
				res[p] = r
				table += fmt.Sprintf("| %s | %s | %.2f | %.7f | %d | %.1f |\n", ref.day, p, r.EnergyKWh, r.SLAV*100, r.Migrations, r.MeanActiveHosts)
			}
			vp, lr := res["vpool"], res["lr-mmt-1.2"]
			if !(vp.EnergyKWh < lr.EnergyKWh) || !(vp.SLAV <= lr.SLAV) || !(2*vp.Migrations <= lr.Migrations) {
				t.Errorf("vpool does not beat lr-mmt-1.2: energy %.2f vs %.2f, SLAV %.6f vs %.6f, migrations %d vs %d",
					vp.EnergyKWh, lr.EnergyKWh, vp.SLAV, lr.SLAV, vp.Migrations, lr.Migrations)
			}
		})
	}
	t.Log("\n" + table)
}
