package api

import (
	"time"

	"github.com/vpool/vpool/internal/model"
)

// UsageReport is the body of GET /usage: metered usage per project and
// VM over [From, To). A day counts when it begins in the range; months
// older than the previous one are kept as totals only and count when
// they begin in the range (Monthly says one did).
type UsageReport struct {
	From     time.Time          `json:"from"`
	To       time.Time          `json:"to"`
	Monthly  bool               `json:"monthly,omitempty"`
	Total    model.UsageFigures `json:"total"`
	Projects []ProjectUsage     `json:"projects"`
	// BookedThrough is how fresh the figures are: every VM that still
	// exists is booked up to at least this time (absent when the range
	// holds no such VM of the current month). The leader writes a VM's
	// rollup at a bounded rate and answers with what it has not written
	// yet; another server answers from the store (docs/metering.md).
	BookedThrough *time.Time `json:"bookedThrough,omitempty"`
}

// ProjectUsage is one project's usage and its VMs'.
type ProjectUsage struct {
	Project string             `json:"project"`
	Total   model.UsageFigures `json:"total"`
	VMs     []VMUsageLine      `json:"vms,omitempty"`
}

// VMUsageLine is one VM's usage (model.MeteringDeletedVMs: the project's
// deleted VMs of compacted months, together).
type VMUsageLine struct {
	VM      string `json:"vm"`
	Deleted bool   `json:"deleted,omitempty"`
	model.UsageFigures
}

// MeteringSettingsPatch changes metering's settings: each site given is
// set; a negative intensity removes its site.
type MeteringSettingsPatch struct {
	Sites map[string]float64 `json:"sitesGPerKWh"`
}
