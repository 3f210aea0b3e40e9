package energy

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// ErrUtilisation is returned for a utilisation outside [0, 1].
var ErrUtilisation = errors.New("energy: utilisation outside [0, 1]")

// Model gives the electrical power of a host, in watts, at a CPU
// utilisation in [0, 1]. Implementations are immutable and safe for
// concurrent use.
type Model interface {
	// Power returns the draw at utilisation u. Values outside [0, 1] are
	// clamped; use CheckedPower to detect them.
	Power(u float64) float64
	// Idle is the draw of a switched-on host with no load (Power(0)).
	Idle() float64
	// Max is the draw at full load (Power(1)).
	Max() float64
	// Standby is the draw of a host that is switched off (soft-off, BMC
	// alive). The literature counts it as zero.
	Standby() float64
	// Name identifies the model ("ml110g4", "table:mybox").
	Name() string
}

// SpecPower is a SPECpower_ssj2008-style table: the draw in watts at 0 %,
// 10 %, ..., 100 % load. Power between the points is linearly
// interpolated exactly as CloudSim's PowerModelSpecPower does, so results
// match the published figures bit for bit.
type SpecPower struct {
	ID       string
	Watts    [11]float64
	StandbyW float64
}

// Built-in models from the SPECpower results used by Beloglazov & Buyya.
var (
	// ML110G4 is the HP ProLiant ML110 G4 (Intel Xeon 3040, 2 x 1860 MHz).
	ML110G4 = &SpecPower{ID: "ml110g4", Watts: [11]float64{86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117}}
	// ML110G5 is the HP ProLiant ML110 G5 (Intel Xeon 3075, 2 x 2660 MHz).
	ML110G5 = &SpecPower{ID: "ml110g5", Watts: [11]float64{93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135}}
)

var _ Model = (*SpecPower)(nil)
var _ Model = (*Table)(nil)

// Builtin returns a built-in model by name.
func Builtin(name string) (Model, bool) {
	switch name {
	case "ml110g4", "ML110G4":
		return ML110G4, true
	case "ml110g5", "ML110G5":
		return ML110G5, true
	}
	return nil, false
}

// Name implements Model.
func (s *SpecPower) Name() string { return s.ID }

// Idle implements Model.
func (s *SpecPower) Idle() float64 { return s.Watts[0] }

// Max implements Model.
func (s *SpecPower) Max() float64 { return s.Watts[10] }

// Standby implements Model.
func (s *SpecPower) Standby() float64 { return s.StandbyW }

// Power implements Model, clamping u to [0, 1].
func (s *SpecPower) Power(u float64) float64 {
	if u < 0 {
		u = 0
	}
	if u > 1 {
		u = 1
	}
	p, _ := s.CheckedPower(u)
	return p
}

// CheckedPower is Power without clamping: it reports ErrUtilisation for
// u outside [0, 1]. The arithmetic follows CloudSim 3.0.3 literally
// (including its use of the floating-point remainder to detect points on
// the table) so that reproduced experiments agree to the last digit.
func (s *SpecPower) CheckedPower(u float64) (float64, error) {
	if u < 0 || u > 1 || math.IsNaN(u) {
		return 0, fmt.Errorf("%w: %v", ErrUtilisation, u)
	}
	// u is on a table point only if u·10 is (nearly) whole; skip the
	// costly remainder otherwise. The exact test stays CloudSim's.
	if f := u * 10; math.Abs(f-math.Round(f)) < 1e-6 && math.Mod(u, 0.1) == 0 {
		return s.Watts[int(u*10)], nil
	}
	u1 := int(math.Floor(u * 10))
	u2 := int(math.Ceil(u * 10))
	p1 := s.Watts[u1]
	p2 := s.Watts[u2]
	delta := (p2 - p1) / 10
	return p1 + delta*(u-float64(u1)/10)*100, nil
}

// Point is one measured point of a user power table.
type Point struct {
	Util  float64 `json:"util"`  // 0..1
	Watts float64 `json:"watts"` // draw at Util
}

// Table is a user-defined power curve: any number of points, linearly
// interpolated, flat beyond the first and last point.
type Table struct {
	ID       string
	Points   []Point // sorted by Util
	StandbyW float64
}

// ErrTable reports an unusable power table.
var ErrTable = errors.New("energy: invalid power table")

// NewTable validates and sorts points into a Table. It needs at least two
// points, utilisations in [0, 1] without duplicates, and non-negative
// watts.
func NewTable(id string, points []Point, standby float64) (*Table, error) {
	if len(points) < 2 {
		return nil, fmt.Errorf("%w %q: need at least 2 points", ErrTable, id)
	}
	ps := append([]Point(nil), points...)
	sort.Slice(ps, func(i, j int) bool { return ps[i].Util < ps[j].Util })
	for i, p := range ps {
		if p.Util < 0 || p.Util > 1 || math.IsNaN(p.Util) {
			return nil, fmt.Errorf("%w %q: utilisation %v outside [0, 1]", ErrTable, id, p.Util)
		}
		if p.Watts < 0 || math.IsNaN(p.Watts) || math.IsInf(p.Watts, 0) {
			return nil, fmt.Errorf("%w %q: watts %v", ErrTable, id, p.Watts)
		}
		if i > 0 && ps[i-1].Util == p.Util {
			return nil, fmt.Errorf("%w %q: duplicate utilisation %v", ErrTable, id, p.Util)
		}
	}
	if standby < 0 {
		return nil, fmt.Errorf("%w %q: negative standby", ErrTable, id)
	}
	return &Table{ID: id, Points: ps, StandbyW: standby}, nil
}

// Name implements Model.
func (t *Table) Name() string { return "table:" + t.ID }

// Idle implements Model.
func (t *Table) Idle() float64 { return t.Power(0) }

// Max implements Model.
func (t *Table) Max() float64 { return t.Power(1) }

// Standby implements Model.
func (t *Table) Standby() float64 { return t.StandbyW }

// Power implements Model.
func (t *Table) Power(u float64) float64 {
	ps := t.Points
	if u <= ps[0].Util {
		return ps[0].Watts
	}
	last := ps[len(ps)-1]
	if u >= last.Util {
		return last.Watts
	}
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Util >= u })
	a, b := ps[i-1], ps[i]
	f := (u - a.Util) / (b.Util - a.Util)
	return a.Watts + f*(b.Watts-a.Watts)
}
