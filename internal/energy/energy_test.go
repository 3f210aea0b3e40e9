package energy

import (
	"errors"
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestSpecPowerInterpolation(t *testing.T) {
	tests := []struct {
		name string
		m    *SpecPower
		u    float64
		want float64
	}{
		{"g4 idle", ML110G4, 0, 86},
		{"g4 full", ML110G4, 1, 117},
		{"g4 table point 0.5", ML110G4, 0.5, 102},
		{"g4 between 0 and 10", ML110G4, 0.05, 86 + 0.5*3.4},
		{"g4 between 40 and 50", ML110G4, 0.45, 99.5 + 0.5*2.5},
		{"g5 idle", ML110G5, 0, 93.7},
		{"g5 full", ML110G5, 1, 135},
		{"g5 quarter", ML110G5, 0.25, 101 + 0.5*4},
		{"g5 0.99", ML110G5, 0.99, 133 + 0.9*2},
		{"clamped below", ML110G5, -1, 93.7},
		{"clamped above", ML110G5, 2, 135},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.Power(tt.u); !near(got, tt.want) {
				t.Errorf("Power(%v) = %v, want %v", tt.u, got, tt.want)
			}
		})
	}
	if _, err := ML110G4.CheckedPower(1.5); !errors.Is(err, ErrUtilisation) {
		t.Errorf("CheckedPower(1.5) err = %v, want ErrUtilisation", err)
	}
}

func TestTable(t *testing.T) {
	tb, err := NewTable("box", []Point{{1, 200}, {0, 100}, {0.5, 180}}, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ u, w float64 }{{0, 100}, {0.25, 140}, {0.5, 180}, {0.75, 190}, {1, 200}, {-3, 100}, {3, 200}} {
		if got := tb.Power(c.u); !near(got, c.w) {
			t.Errorf("Power(%v) = %v, want %v", c.u, got, c.w)
		}
	}
	if tb.Standby() != 5 || tb.Idle() != 100 || tb.Max() != 200 || tb.Name() != "table:box" {
		t.Errorf("accessors: %v %v %v %v", tb.Standby(), tb.Idle(), tb.Max(), tb.Name())
	}
	bad := [][]Point{nil, {{0, 1}}, {{0, 1}, {0, 2}}, {{0, 1}, {1.5, 2}}, {{0, -1}, {1, 2}}, {{0, 1}, {math.NaN(), 2}}}
	for i, ps := range bad {
		if _, err := NewTable("x", ps, 0); !errors.Is(err, ErrTable) {
			t.Errorf("case %d: err = %v, want ErrTable", i, err)
		}
	}
}

func TestIntervalJoules(t *testing.T) {
	tests := []struct {
		name           string
		from, to, secs float64
		want           float64
	}{
		{"off host draws standby (zero)", 0, 0.5, 300, 0},
		{"constant load", 0.5, 0.5, 300, 102 * 300},
		{"ramp: trapezoid", 0.1, 0.3, 10, (89.4 + 96) / 2 * 10},
		{"no time", 0.5, 0.5, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IntervalJoules(ML110G4, tt.from, tt.to, tt.secs); !near(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	sb := &SpecPower{ID: "sb", Watts: ML110G4.Watts, StandbyW: 5}
	if got := IntervalJoules(sb, 0, 0, 100); got != 500 {
		t.Errorf("standby: got %v, want 500", got)
	}
}

func TestLedgerAndCarbon(t *testing.T) {
	var l Ledger
	l.AddHost("h1", 3*JoulesPerKWh, []Share{{VM: "a", Project: "p", CPU: 2}, {VM: "b", Project: "q", CPU: 1}})
	l.AddHost("h2", JoulesPerKWh, nil) // idle overhead, unattributed
	l.AddHost("h3", 2*JoulesPerKWh, []Share{{VM: "c", Project: "p"}, {VM: "d", Project: "q"}})
	r, err := l.Report(Grid{IntensityGPerKWh: 100, PUE: 1.5})
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.TotalKWh, 6) || !near(r.FacilityKWh, 9) || !near(r.CO2g, 900) || !near(r.UnattributedKWh, 1) {
		t.Errorf("totals: %+v", r)
	}
	want := map[string]float64{"a": 2, "b": 1, "c": 1, "d": 1}
	for _, line := range r.VMs {
		if !near(line.KWh, want[line.Name]) {
			t.Errorf("vm %s: %v kWh, want %v", line.Name, line.KWh, want[line.Name])
		}
	}
	if len(r.Projects) != 2 || !near(r.Projects[0].KWh, 3) || !near(r.Projects[1].KWh, 2) {
		t.Errorf("projects: %+v", r.Projects)
	}
	if _, err := l.Report(Grid{IntensityGPerKWh: 1, PUE: 0.5}); !errors.Is(err, ErrGrid) {
		t.Errorf("PUE<1: err = %v", err)
	}
}

func TestBuiltin(t *testing.T) {
	for _, n := range []string{"ml110g4", "ml110g5"} {
		if m, ok := Builtin(n); !ok || m.Name() != n {
			t.Errorf("Builtin(%q) = %v, %v", n, m, ok)
		}
	}
	if _, ok := Builtin("nope"); ok {
		t.Error("Builtin(nope) found")
	}
}
