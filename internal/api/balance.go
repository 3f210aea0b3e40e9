package api

import (
	"time"

	"github.com/vpool/vpool/internal/model"
)

// EnergyLine is one row of an energy report.
type EnergyLine struct {
	Name        string  `json:"name"`
	KWh         float64 `json:"kwh"`
	FacilityKWh float64 `json:"facilityKwh"` // KWh × PUE
	CO2g        float64 `json:"co2g"`        // grams CO2e of the facility energy
	// Watts is the host's draw now (hosts only).
	Watts float64 `json:"watts,omitempty"`
	// State is the host's state now (hosts only).
	State model.HostState `json:"state,omitempty"`
	// PowerModel names the host's power model (hosts only).
	PowerModel string `json:"powerModel,omitempty"`
}

// EnergyReport is the body of GET /cluster/energy: the energy the hosts
// drew since Since (as of At, the ledger's last write), attributed to
// VMs by CPU share and to projects, with carbon from the configured grid
// intensity and PUE.
type EnergyReport struct {
	Since           time.Time    `json:"since"`
	At              time.Time    `json:"at"`
	GridIntensity   float64      `json:"gridIntensityGPerKWh"`
	PUE             float64      `json:"pue"`
	TotalKWh        float64      `json:"totalKwh"`
	FacilityKWh     float64      `json:"facilityKwh"`
	CO2g            float64      `json:"co2g"`
	UnattributedKWh float64      `json:"unattributedKwh"` // idle hosts' energy, no VM to charge
	Watts           float64      `json:"watts"`           // all hosts' draw now
	Hosts           []EnergyLine `json:"hosts"`
	Projects        []EnergyLine `json:"projects"`
	VMs             []EnergyLine `json:"vms,omitempty"` // with ?vms=true
}

// BalanceSettingsPatch changes some balancing settings
// (PATCH /cluster/balance); only the fields present change.
type BalanceSettingsPatch struct {
	Mode             *model.BalanceMode `json:"mode,omitempty"`
	Policy           *string            `json:"policy,omitempty"`
	IntervalSeconds  *int               `json:"intervalSeconds,omitempty"`
	MaxMovesPerRound *int               `json:"maxMovesPerRound,omitempty"`
	MaxMovesPerHost  *int               `json:"maxMovesPerHost,omitempty"`
	Standby          *bool              `json:"standby,omitempty"`
	MinHostsOn       *int               `json:"minHostsOn,omitempty"`
	HeadroomPercent  *float64           `json:"headroomPercent,omitempty"`
	IdleSeconds      *int               `json:"idleSeconds,omitempty"`
	GridIntensity    *float64           `json:"gridIntensityGPerKWh,omitempty"`
	PUE              *float64           `json:"pue,omitempty"`
}

// HostPowerState is the body of GET /agent/v1/power: what the control
// plane wants of the calling host's power ("on" or "standby"). A sleeping
// simulated host polls it as a real one's BMC would be reached.
type HostPowerState struct {
	Desired string `json:"desired"`
}
