package simulate

import (
	"fmt"

	"github.com/vpool/vpool/internal/energy"
)

// Setup selects the modelling assumptions of a run.
type Setup string

// Setups.
const (
	// Literature reproduces Beloglazov & Buyya (2012) / CloudSim 3.0.3:
	// memory limits only the initial placement and a VM whose demand
	// reaches zero is treated as finished and leaves the data centre.
	Literature Setup = "literature"
	// Realistic counts memory in every placement and keeps idle VMs.
	Realistic Setup = "realistic"
)

// ParseSetup parses a setup name.
func ParseSetup(s string) (Setup, error) {
	switch Setup(s) {
	case Literature, Realistic:
		return Setup(s), nil
	case "":
		return Literature, nil
	}
	return "", fmt.Errorf("%w: setup %q (want literature or realistic)", ErrConfig, s)
}

// HostType is a kind of server in the simulated data centre.
type HostType struct {
	Name          string
	Cores         int
	CoreMIPS      float64
	MemMB         float64
	BandwidthMbps float64
	MaxVMs        int
	Power         energy.Model
}

// VMType is a VM flavour.
type VMType struct {
	Name  string
	MIPS  float64 // one core
	MemMB float64
}

// The literature's data centre: ML110 G4 and G5 servers, alternating.
var (
	HostML110G4 = HostType{Name: "ml110g4", Cores: 2, CoreMIPS: 1860, MemMB: 4096, BandwidthMbps: 1000, MaxVMs: 400, Power: energy.ML110G4}
	HostML110G5 = HostType{Name: "ml110g5", Cores: 2, CoreMIPS: 2660, MemMB: 4096, BandwidthMbps: 1000, MaxVMs: 400, Power: energy.ML110G5}
	// LiteratureHostTypes alternate by host index.
	LiteratureHostTypes = []HostType{HostML110G4, HostML110G5}
	// LiteratureVMTypes are assigned in four equal consecutive blocks of
	// the VM list: high-CPU medium, extra large, small, micro (EC2 2012,
	// memory halved).
	LiteratureVMTypes = []VMType{
		{Name: "c1.medium", MIPS: 2500, MemMB: 870},
		{Name: "m1.xlarge", MIPS: 2000, MemMB: 1740},
		{Name: "m1.small", MIPS: 1000, MemMB: 1740},
		{Name: "t1.micro", MIPS: 500, MemMB: 613},
	}
)

// DefaultHosts is the literature's data centre size.
const DefaultHosts = 800

// vmTypeFor returns the flavour of VM i of n: CloudSim's
// i / ceil(n / types).
func vmTypeFor(i, n int) VMType {
	k := len(LiteratureVMTypes)
	block := (n + k - 1) / k
	return LiteratureVMTypes[i/block]
}
