package model

import "time"

// BalanceMode says what the balancer controller does with its plans.
type BalanceMode string

// Balance modes.
const (
	// BalanceOff plans nothing.
	BalanceOff BalanceMode = "off"
	// BalanceRecommend plans every interval and stores the plan with its
	// reasons (vpool balance plan); it moves nothing.
	BalanceRecommend BalanceMode = "recommend"
	// BalanceAutomatic plans and applies the moves as migrations.
	BalanceAutomatic BalanceMode = "automatic"
)

// Host labels read by the balancer, the power controller and the energy
// ledger.
const (
	// LabelPowerModel names a built-in power model (ml110g4, ml110g5).
	LabelPowerModel = "vpool.io/power-model"
	// LabelPowerIdle and LabelPowerMax describe a linear power curve in
	// watts at 0 % and 100 % CPU (both needed).
	LabelPowerIdle = "vpool.io/power-idle-watts"
	LabelPowerMax  = "vpool.io/power-max-watts"
	// LabelPowerStandby is the draw in standby, in watts.
	LabelPowerStandby = "vpool.io/power-standby-watts"
	// LabelNoStandby keeps a host on whatever the power controller thinks.
	LabelNoStandby = "vpool.io/no-standby"
)

// BalanceSettings is the cluster's balancing, power and energy policy,
// stored as data at /vpool/cluster/balance.
type BalanceSettings struct {
	Mode BalanceMode `json:"mode"`
	// Policy is a balance planner name (vpool sim policies): vpool,
	// drs, thr-mmt-0.8, lr-mmt-1.2, ...
	Policy string `json:"policy"`
	// IntervalSeconds is the time between balancing rounds; each round
	// also takes one usage sample per VM for the planners' histories.
	IntervalSeconds int `json:"intervalSeconds"`
	// MaxMovesPerRound and MaxMovesPerHost cap a plan (0: no cap).
	MaxMovesPerRound int `json:"maxMovesPerRound,omitempty"`
	MaxMovesPerHost  int `json:"maxMovesPerHost,omitempty"`

	Power  PowerSettings  `json:"power"`
	Energy EnergySettings `json:"energy"`
}

// PowerSettings drives the power controller.
type PowerSettings struct {
	// Standby lets the power controller put empty hosts to standby.
	// Waking hosts when capacity is needed happens whatever its value.
	Standby bool `json:"standby"`
	// MinHostsOn is the number of hosts always kept on.
	MinHostsOn int `json:"minHostsOn"`
	// HeadroomPercent: a host is woken when the measured CPU use of the
	// hosts that are on exceeds 100-HeadroomPercent of their capacity,
	// and a host is put to standby only if the others keep that headroom.
	HeadroomPercent float64 `json:"headroomPercent"`
	// IdleSeconds is how long a host must have been empty (and on)
	// before it goes to standby.
	IdleSeconds int `json:"idleSeconds"`
}

// EnergySettings describes where the energy comes from.
type EnergySettings struct {
	// GridIntensity is grams of CO2e per kWh at the meter.
	GridIntensity float64 `json:"gridIntensityGPerKWh"`
	// PUE is facility power / IT power (>= 1).
	PUE float64 `json:"pue"`
}

// DefaultBalanceSettings is what a new cluster runs with: vpool's policy
// in recommend mode every 5 minutes, no standby, 400 g/kWh, PUE 1.5.
func DefaultBalanceSettings() BalanceSettings {
	return BalanceSettings{
		Mode: BalanceRecommend, Policy: "vpool", IntervalSeconds: 300,
		Power:  PowerSettings{MinHostsOn: 1, HeadroomPercent: 20, IdleSeconds: 300},
		Energy: EnergySettings{GridIntensity: 400, PUE: 1.5},
	}
}

// Bounds of the balancing settings.
const (
	MinBalanceIntervalSeconds = 10
	MaxBalanceIntervalSeconds = 7 * 24 * 3600
	MaxMovesPerRound          = 10000
	MaxMovesPerHost           = 1000
	MaxMinHostsOn             = 100000
	MaxIdleSeconds            = 30 * 24 * 3600
	// MaxGridIntensity is grams CO2e per kWh; the dirtiest grids are
	// near 1,000.
	MaxGridIntensity = 5000
	// MaxPUE is facility power / IT power; real sites run 1.1 to 3.
	MaxPUE = 10
	// MaxPolicyName bounds a balance planner name.
	MaxPolicyName = 64
)

// Interval is IntervalSeconds as a duration, at most
// MaxBalanceIntervalSeconds and at least 0, so that a value stored before
// the bounds existed cannot overflow to a negative duration.
func (b *BalanceSettings) Interval() time.Duration {
	return time.Duration(min(max(b.IntervalSeconds, 0), MaxBalanceIntervalSeconds)) * time.Second
}

// Validate checks the settings (the policy name is checked by the server,
// which knows the planners). Every count, duration and ratio is bounded.
// It returns a *FieldError.
func (b *BalanceSettings) Validate() error {
	switch b.Mode {
	case BalanceOff, BalanceRecommend, BalanceAutomatic:
	default:
		return fieldErr("mode", "%s is not one of off, recommend, automatic", quoteShort(string(b.Mode)))
	}
	if b.Policy == "" {
		return fieldErr("policy", "is required (see vpool sim policies)")
	}
	if len(b.Policy) > MaxPolicyName {
		return fieldErr("policy", "%s is longer than %d characters (see vpool sim policies)", quoteShort(b.Policy), MaxPolicyName)
	}
	for _, c := range []struct {
		field    string
		v        int
		min, max int
	}{
		{"intervalSeconds", b.IntervalSeconds, MinBalanceIntervalSeconds, MaxBalanceIntervalSeconds},
		{"maxMovesPerRound", b.MaxMovesPerRound, 0, MaxMovesPerRound},
		{"maxMovesPerHost", b.MaxMovesPerHost, 0, MaxMovesPerHost},
		{"power.minHostsOn", b.Power.MinHostsOn, 0, MaxMinHostsOn},
		{"power.idleSeconds", b.Power.IdleSeconds, 0, MaxIdleSeconds},
	} {
		if c.v < c.min || c.v > c.max {
			return fieldErr(c.field, "must be between %d and %d, got %d", c.min, c.max, c.v)
		}
	}
	switch {
	case !finite(b.Power.HeadroomPercent) || b.Power.HeadroomPercent < 0 || b.Power.HeadroomPercent >= 100:
		return fieldErr("power.headroomPercent", "must be in [0, 100), got %v", b.Power.HeadroomPercent)
	case !finite(b.Energy.GridIntensity) || b.Energy.GridIntensity < 0 || b.Energy.GridIntensity > MaxGridIntensity:
		return fieldErr("energy.gridIntensityGPerKWh", "must be between 0 and %d g/kWh, got %v", MaxGridIntensity, b.Energy.GridIntensity)
	case !finite(b.Energy.PUE) || b.Energy.PUE < 1 || b.Energy.PUE > MaxPUE:
		return fieldErr("energy.pue", "must be between 1 and %d, got %v", MaxPUE, b.Energy.PUE)
	}
	return nil
}

// HostPower is the power state the control plane wants for a host, set by
// the power controller. A host in state standby with Desired "on" is
// waking: it becomes ready when its agent reports after Since.
type HostPower struct {
	Desired string    `json:"desired"` // on | standby
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason,omitempty"`
}

// Desired power states of a host.
const (
	HostPowerOn      = "on"
	HostPowerStandby = "standby"
)

// BalancePlan is the balancer's last plan with its reasons, stored at
// /vpool/balance/plan.
type BalancePlan struct {
	Time   time.Time   `json:"time"`
	Mode   BalanceMode `json:"mode"`
	Policy string      `json:"policy"`
	// Note summarises the plan ("1 overloaded host, 2 consolidation moves").
	Note  string        `json:"note"`
	Moves []BalanceMove `json:"moves"`
	Hosts []BalanceHost `json:"hosts"`
	// MovesOmitted and HostsOmitted count the moves and host lines left
	// out so that the stored plan stays small: at most 500 moves, and 200
	// host lines (the hosts the moves touch first, then the busiest).
	MovesOmitted int `json:"movesOmitted,omitempty"`
	HostsOmitted int `json:"hostsOmitted,omitempty"`
	// Samples is the number of usage samples of the longest VM history.
	Samples int `json:"samples"`
	// Applied counts moves started as migrations (automatic mode).
	Applied int `json:"applied"`
	// Refused counts moves the placement gate refused when they were to
	// start (a rule the plan's view did not see yet).
	Refused int `json:"refused,omitempty"`
	// Error says why the plan was not (fully) applied.
	Error string `json:"error,omitempty"`
}

// BalanceMove is one planned migration and why.
type BalanceMove struct {
	VM     string `json:"vm"` // project/name
	From   string `json:"from"`
	To     string `json:"to"`
	Reason string `json:"reason"` // overload | underload | balance | ...
	// Detail explains the move for a person.
	Detail string `json:"detail"`
	// CPUPercent is the VM's current CPU use (100 = one vCPU busy).
	CPUPercent float64 `json:"cpuPercent"`
}

// BalanceHost is one host as the balancer saw it.
type BalanceHost struct {
	Name        string    `json:"name"`
	State       HostState `json:"state"`
	CPUPercent  float64   `json:"cpuPercent"`  // measured
	PlanPercent float64   `json:"planPercent"` // after the plan (current demand)
	VMs         int       `json:"vms"`
	PowerModel  string    `json:"powerModel"`
	Watts       float64   `json:"watts"`
}

// EnergyLedger is the leader's energy ledger as readers see it: joules per
// host, VM (project/name) and project since Since, and each host's draw
// at At. It is assembled from the split records (energy.go); deleted
// VMs, hosts and projects appear as the lines named EnergyDeleted*.
// Before issue 11 it was stored whole at /vpool/energy/ledger.
type EnergyLedger struct {
	Since    time.Time             `json:"since"`
	At       time.Time             `json:"at"`
	TotalJ   float64               `json:"totalJ"`
	HostJ    map[string]float64    `json:"hostJ"`
	VMJ      map[string]float64    `json:"vmJ"`
	ProjectJ map[string]float64    `json:"projectJ"`
	Hosts    map[string]EnergyHost `json:"hosts"`
}

// EnergyHost is one host's power at the time of a ledger.
type EnergyHost struct {
	State      HostState `json:"state"`
	PowerModel string    `json:"powerModel"`
	Watts      float64   `json:"watts"`
	CPUPercent float64   `json:"cpuPercent"`
}
