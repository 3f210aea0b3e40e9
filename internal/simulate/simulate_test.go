package simulate

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/energy"
	"github.com/vpool/vpool/internal/trace"
)

func constTrace(samples int, utils ...float64) *trace.Trace {
	tr := &trace.Trace{Interval: 300}
	for i, u := range utils {
		cpu := make([]float64, samples)
		for j := range cpu {
			cpu[j] = u
		}
		tr.VMs = append(tr.VMs, trace.VM{Name: string(rune('a' + i)), CPU: cpu})
	}
	return tr
}

func closeTo(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.12g, want %.12g", what, got, want)
	}
}

// One 2500-MIPS VM at 50 % for four samples on two hosts, no migration:
// first fit skips the G4 (its 1860-MIPS cores are too small), the G5
// draws P(1250/5320) from the first step (300.1 s) to the last one before
// the end of the trace (900.1 s). The interval before the first step is
// free: the host was off when it started.
func TestEnergyTwoHostsDVFS(t *testing.T) {
	r, err := Run(context.Background(), constTrace(4, 0.5), Config{Policy: "dvfs", Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	u := 1250.0 / 5320
	p := 101 + (105-101)/10.0*(u-0.2)*100
	closeTo(t, "energy kWh", r.EnergyKWh, p*600/energy.JoulesPerKWh)
	if r.Placement != PlacementFirstFit {
		t.Errorf("placement %q, want the literature's %q", r.Placement, PlacementFirstFit)
	}
	if r.Migrations != 0 || r.SLATAH != 0 || r.PDM != 0 || r.HostShutdowns != 1 {
		t.Errorf("metrics: %+v (the never-used G4 counts one shutdown, as in CloudSim)", r)
	}
	closeTo(t, "mean active hosts", r.MeanActiveHosts, 1)
}

// script moves VM 0 to host 0 at the first step.
type script struct{ moved bool }

func (s *script) Name() string { return "script" }
func (s *script) Plan(snap *balance.Snapshot) balance.Plan {
	if s.moved {
		return balance.Plan{}
	}
	s.moved = true
	return balance.Plan{Moves: []balance.Move{{VM: 0, From: 1, To: 0}}}
}

// The same VM starts on the G5 (host 1): the server's scheduler places it
// there, the only host whose cores run 2500 MIPS. It migrates to the G4
// (host 0) at 300.1 s.
// The copy takes 870 MB / 62.5 MB/s = 13.92 s, during which the VM gets
// 90 % of its demand on the source, the target reserves 10 % and counts
// as violating (allocated < requested), and both hosts draw power.
func TestMigrationMetricsTwoHosts(t *testing.T) {
	r, err := Run(context.Background(), constTrace(4, 0.5), Config{Policy: "script", Planner: &script{}, Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	const d = 1250.0
	m := 870 / 62.5
	tau := 300.1 + m
	p4 := energy.ML110G4.Power
	p5 := energy.ML110G5.Power
	joules := m*(p4(125/3720.0)+p5(d/5320)) + ((600.1-tau)+300)*p4(d/3720)
	closeTo(t, "energy kWh", r.EnergyKWh, joules/energy.JoulesPerKWh)
	if r.Migrations != 1 || r.Placement != PlacementScheduler {
		t.Errorf("migrations = %d, placement %q; want 1 and %q", r.Migrations, r.Placement, PlacementScheduler)
	}
	// PDM: 10 % of the demand lost for the copy time, over all demand.
	closeTo(t, "PDM", r.PDM, (d-d*0.9)*m/(d*600))
	// SLATAH: the target violates during the copy; the source only if
	// (d·0.9)/0.9 rounds below d (CloudSim's arithmetic, kept).
	viol := m
	if d*0.9/0.9 < d {
		viol += m
	}
	closeTo(t, "SLATAH", r.SLATAH, viol/(600+m))
	closeTo(t, "SLAV", r.SLAV, r.SLATAH*r.PDM)
	closeTo(t, "ESV", r.ESV, r.EnergyKWh*r.SLAV)
	if r.HostShutdowns != 1 {
		t.Errorf("shutdowns = %d, want 1 (the emptied G5)", r.HostShutdowns)
	}
	closeTo(t, "mean active hosts", r.MeanActiveHosts, (600+m)/600)
}

func TestMetricFolds(t *testing.T) {
	var hm hostMetrics
	h := history{onCommit: hm.fold}
	h.add(entry{t: 0, alloc: 0, req: 0, flag: false}) // replaced below
	h.add(entry{t: 0, alloc: 90, req: 100, flag: true})
	h.add(entry{t: 10, alloc: 100, req: 100, flag: true})
	h.add(entry{t: 40, alloc: 0, req: 0, flag: false})
	h.add(entry{t: 100, alloc: 50, req: 40, flag: true})
	h.finish()
	if hm.activeTime != 40 || hm.violTime != 10 || hm.shutdowns != 1 {
		t.Errorf("host metrics = %+v, want active 40, violation 10, 1 shutdown", hm)
	}
	var vm vmMetrics
	v := history{onCommit: vm.fold}
	v.add(entry{t: 0, alloc: 90, req: 100, flag: true})
	v.add(entry{t: 10, alloc: 80, req: 100, flag: false})
	v.add(entry{t: 20, alloc: 100, req: 100, flag: false})
	v.finish()
	if vm.requested != 2000 || vm.allocated != 1700 || vm.underMigration != 100 {
		t.Errorf("vm metrics = %+v", vm)
	}
}

func TestRunErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Run(ctx, &trace.Trace{}, Config{}); !errors.Is(err, trace.ErrEmpty) {
		t.Errorf("empty trace: %v", err)
	}
	if _, err := Run(ctx, constTrace(2, 0.1), Config{Policy: "nope"}); !errors.Is(err, balance.ErrUnknownPolicy) {
		t.Errorf("bad policy: %v", err)
	}
	if _, err := Run(ctx, constTrace(2, 0.1), Config{Setup: "x"}); !errors.Is(err, ErrConfig) {
		t.Errorf("bad setup: %v", err)
	}
	if _, err := Run(ctx, constTrace(2, 0.1, 0.1, 0.1), Config{Hosts: 1}); !errors.Is(err, ErrConfig) {
		t.Errorf("too few hosts: %v", err)
	}
	for _, cfg := range []Config{
		{CPURatio: -1},
		{MemoryRatio: math.NaN()},
		{MemoryRatio: 9}, // the server's policy allows at most 3
		{Hosts: 3, Cluster: NewCluster(constTrace(2, 0.1), 4)},
	} {
		if _, err := Run(ctx, constTrace(2, 0.1), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", cfg, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Run(cctx, constTrace(4, 0.1), Config{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestRealisticKeepsIdleVMsAndProgress(t *testing.T) {
	tr := constTrace(6, 0, 0.2, 0.3, 0.1)
	steps := 0
	r, err := Run(context.Background(), tr, Config{Setup: Realistic, Hosts: 8, Series: true, Progress: func(s, n int) { steps = s }})
	if err != nil {
		t.Fatal(err)
	}
	if steps != 5 || len(r.Series) != 5 {
		t.Errorf("progress steps %d, series %d; want 5", steps, len(r.Series))
	}
	var buf bytes.Buffer
	if err := WriteSVG(&buf, "test", r); err != nil {
		t.Fatal(err)
	}
	if s := buf.String(); !strings.HasPrefix(s, "<svg") || strings.Count(s, "<polyline") != 2 {
		t.Errorf("svg: %.200s", s)
	}
	if err := WriteSVG(&buf, "x", &Result{}); !errors.Is(err, ErrNoSeries) {
		t.Errorf("no series: %v", err)
	}
}
