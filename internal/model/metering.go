package model

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Metering (docs/metering.md): the leader integrates what each VM holds
// and uses into monthly rollups, one record per VM and month, with a
// figure per day (months older than the previous one keep their totals
// only). CO2 is the VM's energy × the facility's PUE × the grid's
// intensity where its host stood (per site, or a time series).

// UsageFigures are the metered quantities of a VM (or a sum of VMs).
type UsageFigures struct {
	VCPUHours    float64 `json:"vcpuHours"`
	MemGiBHours  float64 `json:"memGiBHours"`
	DiskGiBHours float64 `json:"diskGiBHours"`
	NetBytes     int64   `json:"netBytes"`
	EnergyKWh    float64 `json:"energyKWh"` // IT energy: the VM's share of its host's draw
	CO2Grams     float64 `json:"co2Grams"`  // EnergyKWh × PUE × grid intensity
}

// Add returns u + o.
func (u UsageFigures) Add(o UsageFigures) UsageFigures {
	return UsageFigures{VCPUHours: u.VCPUHours + o.VCPUHours, MemGiBHours: u.MemGiBHours + o.MemGiBHours,
		DiskGiBHours: u.DiskGiBHours + o.DiskGiBHours, NetBytes: u.NetBytes + o.NetBytes,
		EnergyKWh: u.EnergyKWh + o.EnergyKWh, CO2Grams: u.CO2Grams + o.CO2Grams}
}

// UsageDay is one day of a rollup (Day 1–31 of its month, UTC).
type UsageDay struct {
	Day int `json:"day"`
	UsageFigures
}

// UsageRollup is one VM's usage in one month ("2025-03", UTC).
type UsageRollup struct {
	Month   string       `json:"month"`
	Project string       `json:"project"`
	VM      string       `json:"vm"`
	Total   UsageFigures `json:"total"`
	// Days holds the days with usage, in order; nil once the month is
	// compacted (months before the previous one keep totals only).
	Days []UsageDay `json:"days,omitempty"`
	// Host is where the VM last ran; Deleted says it is gone.
	Host    string `json:"host,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
	// LastAt, LastNet and LastEnergyJ are the meter's last sample of the
	// VM's counters, so that a new leader resumes from them.
	LastAt      time.Time `json:"lastAt"`
	LastNet     int64     `json:"lastNet,omitempty"`
	LastEnergyJ float64   `json:"lastEnergyJ,omitempty"`
	// Shape is what the VM held at LastAt, so that a new leader books
	// the time since LastAt as the VM had it (the leader writes a
	// rollup at once when its shape changes, else at a bounded rate:
	// docs/metering.md). Absent in rollups written before it.
	Shape *UsageShape `json:"shape,omitempty"`
}

// UsageRollupShard is the rollups of some VMs of one project in one
// month, stored as one value (/vpool/metering/<month>/<project>/~<n>):
// at rest the leader writes a shard, not each of its VMs, once per
// persist interval (docs/metering.md). A VM stays in its shard for the
// month.
type UsageRollupShard struct {
	Month   string        `json:"month"`
	Project string        `json:"project"`
	Shard   int           `json:"shard"`
	Rollups []UsageRollup `json:"rollups"`
}

// UsageShape is what a VM held at one sample: vCPUs and memory accrue
// while it runs, disks while it is placed.
type UsageShape struct {
	VCPUs   int    `json:"vcpus,omitempty"`
	Memory  Bytes  `json:"memory,omitempty"`
	Disk    Bytes  `json:"disk,omitempty"`
	Running bool   `json:"running,omitempty"`
	Placed  bool   `json:"placed,omitempty"`
	Site    string `json:"site,omitempty"`
}

// MeteringMark is what the metering leader wrote last (store key
// /vpool/metering/mark): every VM's stored rollup is exact up to its
// LastAt, and the VM kept its stored shape and counted on, sampled
// without a gap longer than the cap, until At. A new leader books the
// time between a rollup's LastAt and At in full, and only the time after
// At is capped (docs/metering.md).
type MeteringMark struct {
	At time.Time `json:"at"`
}

// SiteLabel names the site a host stands in (for grid intensity).
const SiteLabel = "vpool.io/site"

// MeteringDeletedVMs is the VM name of a project's folded deleted VMs
// in compacted months.
const MeteringDeletedVMs = "(deleted VMs)"

// MeteringSettings are metering's settings (/vpool/cluster/metering):
// the grid intensity per site, for hosts labelled with their site
// (SiteLabel); other hosts use the cluster's (BalanceSettings.Energy).
type MeteringSettings struct {
	Sites map[string]float64 `json:"sitesGPerKWh,omitempty"`
}

// MaxSites bounds MeteringSettings.Sites.
const MaxSites = 64

// Validate checks site names (label values) and intensities.
func (m *MeteringSettings) Validate() error {
	if len(m.Sites) > MaxSites {
		return fieldErr("sitesGPerKWh", "at most %d sites, got %d", MaxSites, len(m.Sites))
	}
	for site, v := range m.Sites {
		if site == "" || !ValidLabelValue(site) {
			return fieldErr("sitesGPerKWh", "%s is not a site name (a label value: 1-63 of A-Z a-z 0-9 - _ .)", quoteShort(site))
		}
		if !finite(v) || v < 0 || v > MaxGridIntensity {
			return fieldErr("sitesGPerKWh."+site, "must be between 0 and %d g/kWh, got %v", MaxGridIntensity, v)
		}
	}
	return nil
}

// A day is stored as an array — [day, vCPU-h, memory GiB-h, disk GiB-h,
// network bytes, kWh, g CO2] with ten significant digits — which keeps a
// month of days of a VM near 1.5 KB instead of 4.6 KB (docs/metering.md).

// MarshalJSON writes the day as its compact array.
func (d UsageDay) MarshalJSON() ([]byte, error) {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 10, 64) }
	return []byte("[" + strconv.Itoa(d.Day) + "," + f(d.VCPUHours) + "," + f(d.MemGiBHours) + "," + f(d.DiskGiBHours) + "," +
		strconv.FormatInt(d.NetBytes, 10) + "," + f(d.EnergyKWh) + "," + f(d.CO2Grams) + "]"), nil
}

// UnmarshalJSON reads the compact array.
func (d *UsageDay) UnmarshalJSON(b []byte) error {
	var a []json.Number
	if err := json.Unmarshal(b, &a); err != nil {
		return fmt.Errorf("model: a usage day: %w", err)
	}
	if len(a) != 7 {
		return fmt.Errorf("model: a usage day has %d figures, want 7", len(a))
	}
	day, err := a[0].Int64()
	if err != nil {
		return fmt.Errorf("model: a usage day: %w", err)
	}
	net, err := a[4].Int64()
	if err != nil {
		return fmt.Errorf("model: a usage day: %w", err)
	}
	var fs [5]float64
	for i, j := range []int{1, 2, 3, 5, 6} {
		if fs[i], err = a[j].Float64(); err != nil {
			return fmt.Errorf("model: a usage day: %w", err)
		}
	}
	*d = UsageDay{Day: int(day), UsageFigures: UsageFigures{VCPUHours: fs[0], MemGiBHours: fs[1], DiskGiBHours: fs[2],
		NetBytes: net, EnergyKWh: fs[3], CO2Grams: fs[4]}}
	return nil
}
