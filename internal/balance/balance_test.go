package balance

import (
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/energy"
)

// snap builds a snapshot: hosts given as (MIPS, core MIPS, model, util),
// VMs as (host, MIPS, mem, demand, history).
type hostSpec struct {
	mips, pe float64
	model    energy.Model
	util     float64
}

type vmSpec struct {
	host           int
	mips, mem, dem float64
	hist           []float64
}

func snap(hosts []hostSpec, vms []vmSpec) *Snapshot {
	s := &Snapshot{Interval: 300}
	for _, h := range hosts {
		s.Hosts = append(s.Hosts, Host{MIPS: h.mips, PEMIPS: h.pe, MemMB: 4096, BandwidthMbps: 1000, MaxVMs: 400, Power: h.model, Util: h.util})
	}
	for i, v := range vms {
		s.VMs = append(s.VMs, VM{Host: v.host, MIPS: v.mips, MemMB: v.mem, Demand: v.dem, History: v.hist})
		if v.host >= 0 {
			s.Hosts[v.host].VMs = append(s.Hosts[v.host].VMs, i)
		}
	}
	return s
}

var (
	g4 = hostSpec{mips: 3720, pe: 1860, model: energy.ML110G4}
	g5 = hostSpec{mips: 5320, pe: 2660, model: energy.ML110G5}
)

func withUtil(h hostSpec, u float64) hostSpec { h.util = u; return h }

func TestStats(t *testing.T) {
	d := []float64{1, 2, 3, 4, 100}
	if got := median(d); got != 3 {
		t.Errorf("median = %v", got)
	}
	if got := mad(d); got != 1 {
		t.Errorf("mad = %v", got)
	}
	if got := percentile([]float64{1, 2, 3, 4}, 50); got != 2.5 {
		t.Errorf("p50 even = %v", got)
	}
	// Apache legacy estimator: p25 of 1..8 is at position 2.25.
	if got := iqr([]float64{1, 2, 3, 4, 5, 6, 7, 8}); got != 6.75-2.25 {
		t.Errorf("iqr = %v", got)
	}
	a, b, ok := simpleRegression([]float64{1, 2, 3, 4}, []float64{3, 5, 7, 9})
	if !ok || math.Abs(a-1) > 1e-12 || math.Abs(b-2) > 1e-12 {
		t.Errorf("regression = %v, %v, %v", a, b, ok)
	}
	if got := trimmedLen([]float64{1, 0, 2, 0, 0}); got != 3 {
		t.Errorf("trimmedLen = %v", got)
	}
	if got := trimmedLen([]float64{0, 0}); got != 1 {
		t.Errorf("trimmedLen(all zero) = %v, CloudSim says 1", got)
	}
	r, ok := rSquared([][]float64{{1, 2, 3, 4, 5}}, []float64{2, 4, 6, 8, 10})
	if !ok || math.Abs(r-1) > 1e-9 {
		t.Errorf("rSquared = %v, %v", r, ok)
	}
}

func TestDetectors(t *testing.T) {
	rising := []float64{0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.5, 0.5}
	flat := []float64{0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3}
	tests := []struct {
		name string
		det  Detector
		vms  []vmSpec
		want bool
	}{
		{"thr below", Threshold{Limit: 0.8}, []vmSpec{{0, 5320, 870, 4000, nil}}, false},
		{"thr above", Threshold{Limit: 0.8}, []vmSpec{{0, 5320, 870, 4300, nil}}, true},
		{"lr falls back to 0.7 without history", LocalRegression{S: 1.2, Fallback: Threshold{0.7}}, []vmSpec{{0, 5320, 870, 3800, nil}}, true},
		{"lr flat history is safe", LocalRegression{S: 1.2, Fallback: Threshold{0.7}}, []vmSpec{{0, 5320, 870, 1596, flat}}, false},
		{"lr rising history predicts overload", LocalRegression{S: 1.2, Fallback: Threshold{0.7}}, []vmSpec{{0, 5320, 870, 5054, rising}}, true},
		{"lrr rising history predicts overload", LocalRegression{S: 1.2, Robust: true, Fallback: Threshold{0.7}}, []vmSpec{{0, 5320, 870, 5054, rising}}, true},
		{"mad flat history: threshold 1", MAD{S: 2.5, Fallback: Threshold{0.7}}, []vmSpec{{0, 5320, 870, 4800, flat}}, false},
		{"iqr flat history: threshold 1", IQR{S: 1.5, Fallback: Threshold{0.7}}, []vmSpec{{0, 5320, 870, 4800, flat}}, false},
		{"mad short history falls back", MAD{S: 2.5, Fallback: Threshold{0.7}}, []vmSpec{{0, 5320, 870, 4800, flat[:5]}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newState(snap([]hostSpec{g5}, tt.vms))
			if got := tt.det.overloaded(st, 0, -1); got != tt.want {
				t.Errorf("overloaded = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSelectors(t *testing.T) {
	s := snap([]hostSpec{g5}, []vmSpec{{0, 2500, 1740, 100, nil}, {0, 500, 613, 100, nil}, {0, 1000, 613, 100, nil}})
	st := newState(s)
	if got := (MinMigrationTime{}).pick(st, 0); got != 1 {
		t.Errorf("MMT picked %d, want 1 (least memory, first of equals)", got)
	}
	r1, r2 := NewRandomSelection(7), NewRandomSelection(7)
	for i := 0; i < 5; i++ {
		if a, b := r1.pick(st, 0), r2.pick(st, 0); a != b {
			t.Fatalf("seeded random differs: %d vs %d", a, b)
		}
	}
	if got := (MaxCorrelation{}).pick(st, 0); got != 1 {
		t.Errorf("MC without history should fall back to MMT, got %d", got)
	}
}

func TestCPUAllocationOversubscribed(t *testing.T) {
	// Two VMs asking 2000 each on a 3720-MIPS host: scaled by 3720/4000
	// and rounded down, as CloudSim's over-subscribing scheduler does.
	st := newState(snap([]hostSpec{g4}, []vmSpec{{0, 2000, 1740, 2000, nil}, {0, 2000, 1740, 2000, nil}}))
	ph := st.h[0]
	// Each VM is capped at one core (1860) first: 3720/3720 fits exactly.
	if ph.sumAlloc != 3720 || ph.avail != 0 {
		t.Errorf("capped: alloc %v avail %v", ph.sumAlloc, ph.avail)
	}
	st = newState(snap([]hostSpec{g4}, []vmSpec{{0, 2000, 870, 1500, nil}, {0, 2000, 870, 1500, nil}, {0, 2000, 870, 1500, nil}}))
	if want := 3 * math.Floor(1500*(3720.0/4500)); st.h[0].sumAlloc != want {
		t.Errorf("oversubscribed alloc = %v, want %v", st.h[0].sumAlloc, want)
	}
}

func TestPABFDPrefersCheapestPowerIncrease(t *testing.T) {
	// Host 0 (G4) and host 1 (G5) run at 40 %; host 2 (G5) is off. PABFD
	// prices a host against its draw at the last update, so an off host
	// looks cheap (its idle power is not counted): the literature's
	// placement wakes hosts readily.
	s := snap([]hostSpec{withUtil(g4, 0.4), withUtil(g5, 0.4), g5}, []vmSpec{
		{0, 2000, 1740, 1488, nil}, {1, 2500, 870, 2128, nil}, {-1, 1000, 613, 200, nil},
	})
	st := newState(s)
	ex := newExcluder(3)
	if got := st.pabfd(Threshold{Limit: 0.8}, 2, ex); got != 2 {
		t.Errorf("pabfd = %d, want 2 (off host: +1.24 W)", got)
	}
	ex.mark[2] = true
	if got := st.pabfd(Threshold{Limit: 0.8}, 2, ex); got != 0 {
		t.Errorf("pabfd without host 2 = %d, want 0 (+1.35 W on the flat G4 segment)", got)
	}
	ex.mark[2], ex.mark[0] = false, true
	// A 2300-MIPS VM exceeds a G4 core and would push host 1 over 80 %.
	s.VMs[2].Demand = 2300
	ex.mark[0] = false
	if got := newState(s).pabfd(Threshold{Limit: 0.8}, 2, ex); got != 2 {
		t.Errorf("pabfd big VM = %d, want 2", got)
	}
}

func TestLiteratureConsolidatesLeastUtilisedHost(t *testing.T) {
	// Three G5 hosts: host 1 nearly idle, its single VM fits on host 0.
	s := snap([]hostSpec{withUtil(g5, 0.3), withUtil(g5, 0.05), withUtil(g5, 0.5)}, []vmSpec{
		{0, 2500, 870, 1596, nil}, {1, 500, 613, 266, nil}, {2, 2500, 870, 2660, nil},
	})
	p, err := NewPlanner("thr-mmt-0.8", 1)
	if err != nil {
		t.Fatal(err)
	}
	plan := p.Plan(s)
	want := []Move{{VM: 1, From: 1, To: 0, Reason: ReasonUnderload}}
	if diff := cmp.Diff(want, plan.Moves); diff != "" {
		t.Errorf("moves (-want +got):\n%s", diff)
	}
}

func TestLiteratureRelievesOverload(t *testing.T) {
	s := snap([]hostSpec{withUtil(g5, 0.9), withUtil(g5, 0.2)}, []vmSpec{
		{0, 2500, 870, 2400, nil}, {0, 2000, 1740, 1800, nil}, {0, 500, 613, 450, nil}, {1, 2500, 870, 1064, nil},
	})
	p, _ := NewPlanner("thr-mmt-0.8", 1)
	plan := p.Plan(s)
	if len(plan.Moves) == 0 || plan.Moves[0] != (Move{VM: 2, From: 0, To: 1, Reason: ReasonOverload}) {
		t.Errorf("first move = %+v, want the 613-MB VM 2 to host 1", plan.Moves)
	}
}

func TestVPoolRelievesWithOneMoveAndConsolidates(t *testing.T) {
	hist := func(u float64) []float64 { return []float64{u, u, u, u, u, u} }
	s := snap([]hostSpec{withUtil(g5, 1), withUtil(g5, 0.3), withUtil(g5, 0.05), g5}, []vmSpec{
		{0, 2500, 870, 2500, hist(1)}, {0, 2500, 870, 2500, hist(1)}, {0, 2000, 1740, 600, hist(0.3)}, // 5600 > 5320
		{1, 2500, 870, 1596, hist(0.6384)},
		{2, 500, 613, 266, hist(0.532)},
	})
	plan := NewVPool(DefaultVPoolConfig()).Plan(s)
	want := []Move{
		{VM: 0, From: 0, To: 1, Reason: ReasonOverload},  // least memory among VMs covering the excess
		{VM: 4, From: 2, To: 1, Reason: ReasonUnderload}, // the near-idle host is emptied
	}
	if diff := cmp.Diff(want, plan.Moves); diff != "" {
		t.Errorf("moves (-want +got):\n%s", diff)
	}
}

func TestVPoolPlaceInitialPrefersEfficientHosts(t *testing.T) {
	s := snap([]hostSpec{g4, g5, g4, g5}, []vmSpec{{-1, 1000, 1740, 1000, nil}, {-1, 1000, 1740, 1000, nil}, {-1, 1000, 1740, 1000, nil}})
	got := NewVPool(DefaultVPoolConfig()).PlaceInitial(s)
	// G5 first; memory (2 × 1740 per 4 GB host) sends the third VM on.
	if diff := cmp.Diff([]int{1, 1, 3}, got); diff != "" {
		t.Errorf("placement (-want +got):\n%s", diff)
	}
}

func TestNewPlanner(t *testing.T) {
	for _, n := range []string{"thr-mmt-0.8", "lr-mmt-1.2", "lrr-mc-1.2", "mad-mmt-2.5", "iqr-rs-1.5", "vpool", "drs"} {
		p, err := NewPlanner(n, 1)
		if err != nil || p == nil {
			t.Errorf("NewPlanner(%q) = %v, %v", n, p, err)
		}
	}
	if p, err := NewPlanner("dvfs", 1); p != nil || err != nil {
		t.Errorf("dvfs = %v, %v; want nil planner", p, err)
	}
	for _, n := range []string{"foo", "thr-mmt", "thr-mmt-x", "xx-mmt-1", "thr-yy-1", "thr-mmt--1"} {
		if _, err := NewPlanner(n, 1); !errors.Is(err, ErrUnknownPolicy) {
			t.Errorf("NewPlanner(%q) err = %v", n, err)
		}
	}
	if p, _ := NewPlanner("mad-mmt-2.5", 1); p.Name() != "mad-mmt-2.5" {
		t.Errorf("name = %q", p.Name())
	}
}

func TestMigrationSeconds(t *testing.T) {
	if got := MigrationSeconds(870, 1000); got != 870/62.5 {
		t.Errorf("got %v", got)
	}
}

func TestDRSBalancesWithHysteresis(t *testing.T) {
	s := snap([]hostSpec{withUtil(g5, 0.7), withUtil(g5, 0.1)}, []vmSpec{
		{0, 2500, 870, 1800, nil}, {0, 2000, 1740, 1000, nil}, {0, 500, 613, 924, nil}, {1, 500, 613, 532, nil},
	})
	plan := NewDRS(DefaultDRSConfig()).Plan(s)
	if len(plan.Moves) == 0 || plan.Moves[0].From != 0 || plan.Moves[0].To != 1 {
		t.Fatalf("moves = %+v, want a move from host 0 to host 1", plan.Moves)
	}
	// Balanced within tolerance: nothing to do.
	s2 := snap([]hostSpec{withUtil(g5, 0.5), withUtil(g5, 0.45)}, []vmSpec{{0, 2500, 870, 2660, nil}, {1, 2500, 870, 2394, nil}})
	if plan := NewDRS(DefaultDRSConfig()).Plan(s2); len(plan.Moves) != 0 {
		t.Errorf("balanced cluster moved: %+v", plan.Moves)
	}
}

type fixedPlanner []Move

func (f fixedPlanner) Name() string        { return "fixed" }
func (f fixedPlanner) Plan(*Snapshot) Plan { return Plan{Moves: f} }

func TestBudget(t *testing.T) {
	moves := fixedPlanner{{VM: 0, From: 0, To: 1}, {VM: 1, From: 0, To: 2}, {VM: 2, From: 0, To: 3}, {VM: 3, From: 4, To: 5}}
	got := Budget{Planner: moves, PerHost: 2}.Plan(nil).Moves
	want := []Move{{VM: 0, From: 0, To: 1}, {VM: 1, From: 0, To: 2}, {VM: 3, From: 4, To: 5}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("per host (-want +got):\n%s", diff)
	}
	if got := (Budget{Planner: moves, PerRound: 1}).Plan(nil).Moves; len(got) != 1 {
		t.Errorf("per round: %d moves", len(got))
	}
}
