package energy

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// JoulesPerKWh converts joules (watt-seconds) to kilowatt-hours.
const JoulesPerKWh = 3600 * 1000

// IntervalJoules is the energy a host draws over seconds while its
// utilisation moves linearly from fromU to toU (trapezoid rule). A host
// whose utilisation was zero at the start of the interval is switched
// off and draws its standby power only — this is the literature's
// convention ("a host with no load draws nothing") when Standby is 0.
func IntervalJoules(m Model, fromU, toU, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	if fromU == 0 {
		return m.Standby() * seconds
	}
	from := m.Power(fromU)
	to := m.Power(toU)
	return (from + (to-from)/2) * seconds
}

// Share is one VM's part of a host's CPU during an interval, used to
// attribute the host's energy.
type Share struct {
	VM      string
	Project string
	CPU     float64 // MIPS (or any unit, only ratios matter)
}

// Ledger accumulates energy in joules per host, per VM and per project.
// The zero value is ready to use; it is not safe for concurrent use.
type Ledger struct {
	host    map[string]float64
	vm      map[string]float64
	project map[string]float64
	total   float64
}

// AddHost books joules drawn by host and attributes them to the VMs in
// shares in proportion to their CPU; with no CPU used the energy is split
// evenly among the VMs present, and with no VM it stays unattributed
// (idle overhead, visible in Report.UnattributedKWh).
func (l *Ledger) AddHost(host string, joules float64, shares []Share) {
	if joules == 0 {
		return
	}
	if l.host == nil {
		l.host, l.vm, l.project = map[string]float64{}, map[string]float64{}, map[string]float64{}
	}
	l.host[host] += joules
	l.total += joules
	if len(shares) == 0 {
		return
	}
	var sum float64
	for _, s := range shares {
		sum += math.Max(s.CPU, 0)
	}
	for _, s := range shares {
		part := joules / float64(len(shares))
		if sum > 0 {
			part = joules * math.Max(s.CPU, 0) / sum
		}
		l.vm[s.VM] += part
		if s.Project != "" {
			l.project[s.Project] += part
		}
	}
}

// TotalKWh is the energy booked so far.
func (l *Ledger) TotalKWh() float64 { return l.total / JoulesPerKWh }

// Grid describes where the energy comes from.
type Grid struct {
	IntensityGPerKWh float64 `json:"intensity_g_per_kwh"` // grams CO2e per kWh at the meter
	PUE              float64 `json:"pue"`                 // facility power / IT power, >= 1
}

// DefaultGrid is a neutral default: 400 gCO2e/kWh and a PUE of 1.5.
var DefaultGrid = Grid{IntensityGPerKWh: 400, PUE: 1.5}

// ErrGrid reports an unusable grid description.
var ErrGrid = errors.New("energy: invalid grid")

// Validate checks g.
func (g Grid) Validate() error {
	if g.IntensityGPerKWh < 0 || math.IsNaN(g.IntensityGPerKWh) {
		return fmt.Errorf("%w: intensity %v", ErrGrid, g.IntensityGPerKWh)
	}
	if g.PUE < 1 || math.IsNaN(g.PUE) {
		return fmt.Errorf("%w: pue %v must be >= 1", ErrGrid, g.PUE)
	}
	return nil
}

// Carbon returns the facility energy (IT energy times PUE) and the grams
// of CO2e it emits.
func (g Grid) Carbon(itKWh float64) (facilityKWh, grams float64) {
	facilityKWh = itKWh * g.PUE
	return facilityKWh, facilityKWh * g.IntensityGPerKWh
}

// Line is one row of a Report.
type Line struct {
	Name        string  `json:"name"`
	KWh         float64 `json:"kwh"`
	FacilityKWh float64 `json:"facility_kwh"`
	CO2g        float64 `json:"co2_g"`
}

// Report is the ledger rendered with a grid.
type Report struct {
	TotalKWh        float64 `json:"total_kwh"`
	FacilityKWh     float64 `json:"facility_kwh"`
	CO2g            float64 `json:"co2_g"`
	UnattributedKWh float64 `json:"unattributed_kwh"`
	Hosts           []Line  `json:"hosts"`
	VMs             []Line  `json:"vms"`
	Projects        []Line  `json:"projects"`
}

// Report renders the ledger; lines are sorted by name.
func (l *Ledger) Report(g Grid) (Report, error) {
	if err := g.Validate(); err != nil {
		return Report{}, err
	}
	lines := func(m map[string]float64) []Line {
		out := make([]Line, 0, len(m))
		for k, j := range m {
			kwh := j / JoulesPerKWh
			f, c := g.Carbon(kwh)
			out = append(out, Line{Name: k, KWh: kwh, FacilityKWh: f, CO2g: c})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out
	}
	var vmSum float64
	for _, j := range l.vm {
		vmSum += j
	}
	r := Report{TotalKWh: l.TotalKWh(), Hosts: lines(l.host), VMs: lines(l.vm), Projects: lines(l.project)}
	r.FacilityKWh, r.CO2g = g.Carbon(r.TotalKWh)
	r.UnattributedKWh = (l.total - vmSum) / JoulesPerKWh
	return r, nil
}
