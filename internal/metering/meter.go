// Package metering integrates what VMs hold and use into monthly
// rollups per VM (model.UsageRollup): vCPU-hours and GiB-hours of memory
// while a VM runs, disk GiB-hours while it has a host, network bytes and
// energy from its counters, CO2 from its energy × PUE × the grid's
// intensity at its host's site and time. It keeps a figure per day for
// the current and previous month, totals for older months, folds deleted
// VMs of compacted months into one line per project, and answers reports
// over any range of days (docs/metering.md).
//
// It is pure: samples in, rollups out, no store, no clock, no I/O
// (internal/metering/meterstore feeds it and keeps its rollups). It
// imports the standard library and internal/model only.
package metering

import (
	"math"
	"sort"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// VMSample is one VM at one instant.
type VMSample struct {
	Project, Name string
	Host          string // "" when placed nowhere
	Site          string // the host's site (model.SiteLabel)
	VCPUs         int
	Memory, Disk  model.Bytes
	// Running: vCPUs and memory accrue; Placed (on a host): disks accrue.
	Running, Placed bool
	// NetBytes and EnergyJ are cumulative counters (bytes received and
	// sent by the VM's NICs; joules attributed to it by the energy
	// ledger). A counter that went down started again from zero.
	NetBytes int64
	EnergyJ  float64
}

// Sample is every VM at one instant.
type Sample struct {
	At  time.Time
	VMs []VMSample
}

// DefaultMaxGap bounds the interval booked between two samples of a VM:
// a longer gap (no leader, a stalled meter) books this much and no more.
const DefaultMaxGap = 10 * time.Minute

// Meter integrates samples into rollups.
type Meter struct {
	// MaxGap bounds one interval (default DefaultMaxGap).
	MaxGap  time.Duration
	rollups map[string]*model.UsageRollup // by rollupKey
	dirty   map[string]bool
	last    map[string]VMSample // by project/name: the previous sample
	lastAt  map[string]time.Time
}

// New returns an empty meter.
func New() *Meter {
	return &Meter{MaxGap: DefaultMaxGap, rollups: map[string]*model.UsageRollup{}, dirty: map[string]bool{},
		last: map[string]VMSample{}, lastAt: map[string]time.Time{}}
}

// Month is the month of t ("2006-01", UTC).
func Month(t time.Time) string { return t.UTC().Format("2006-01") }

func rollupKey(month, project, vm string) string { return month + "/" + project + "/" + vm }

// Load resumes from stored rollups: their figures, and each VM's last
// counters from its newest rollup.
func (m *Meter) Load(rs []model.UsageRollup) {
	for i := range rs {
		r := rs[i]
		m.rollups[rollupKey(r.Month, r.Project, r.VM)] = &r
		key := r.Project + "/" + r.VM
		if r.Deleted || r.VM == model.MeteringDeletedVMs || !r.LastAt.After(m.lastAt[key]) {
			continue
		}
		m.lastAt[key] = r.LastAt
		m.last[key] = VMSample{Project: r.Project, Name: r.VM, Host: r.Host, NetBytes: r.LastNet, EnergyJ: r.LastEnergyJ}
	}
}

// Add books the interval since each VM's previous sample and marks the
// VMs missing from s deleted.
func (m *Meter) Add(s Sample, g Grid) {
	seen := make(map[string]bool, len(s.VMs))
	for _, v := range s.VMs {
		key := v.Project + "/" + v.Name
		seen[key] = true
		prev, known := m.last[key]
		if known {
			m.book(prev, m.lastAt[key], v, s.At, g)
		}
		r := m.rollup(Month(s.At), v.Project, v.Name)
		r.Host, r.LastAt, r.LastNet, r.LastEnergyJ, r.Deleted = v.Host, s.At, v.NetBytes, v.EnergyJ, false
		m.dirty[rollupKey(r.Month, r.Project, r.VM)] = true
		m.last[key], m.lastAt[key] = v, s.At
	}
	for key, prev := range m.last {
		if seen[key] {
			continue
		}
		r := m.rollup(Month(s.At), prev.Project, prev.Name)
		r.Deleted = true
		m.dirty[rollupKey(r.Month, r.Project, r.VM)] = true
		delete(m.last, key)
		delete(m.lastAt, key)
	}
}

func (m *Meter) rollup(month, project, vm string) *model.UsageRollup {
	k := rollupKey(month, project, vm)
	r := m.rollups[k]
	if r == nil {
		r = &model.UsageRollup{Month: month, Project: project, VM: vm}
		m.rollups[k] = r
	}
	return r
}

// book integrates (from, to] for one VM: its shape as sampled at from
// (prev; the current one after a resume, which knows only counters),
// its counters' growth spread evenly over the interval, split at day
// boundaries.
func (m *Meter) book(prev VMSample, from time.Time, cur VMSample, to time.Time, g Grid) {
	if !to.After(from) {
		return
	}
	if prev.VCPUs == 0 && prev.Memory == 0 && prev.Disk == 0 {
		prev.VCPUs, prev.Memory, prev.Disk, prev.Running, prev.Placed, prev.Site = cur.VCPUs, cur.Memory, cur.Disk, cur.Running, cur.Placed, cur.Site
	}
	if gap := m.MaxGap; gap > 0 && to.Sub(from) > gap {
		from = to.Add(-gap)
	}
	dNet := cur.NetBytes - prev.NetBytes
	if dNet < 0 {
		dNet = cur.NetBytes
	}
	dJ := cur.EnergyJ - prev.EnergyJ
	if dJ < 0 {
		dJ = cur.EnergyJ
	}
	total := to.Sub(from).Seconds()
	var netBooked int64
	for a := from; a.Before(to); {
		b := nextDay(a)
		if b.After(to) {
			b = to
		}
		frac := b.Sub(a).Seconds() / total
		hours := b.Sub(a).Hours()
		var f model.UsageFigures
		if prev.Running {
			f.VCPUHours = float64(prev.VCPUs) * hours
			f.MemGiBHours = float64(prev.Memory) / float64(model.GiB) * hours
		}
		if prev.Placed {
			f.DiskGiBHours = float64(prev.Disk) / float64(model.GiB) * hours
		}
		if b.Equal(to) {
			f.NetBytes = dNet - netBooked
		} else {
			f.NetBytes = int64(math.Round(float64(dNet) * frac))
			netBooked += f.NetBytes
		}
		f.EnergyKWh = dJ * frac / 3.6e6
		f.CO2Grams = f.EnergyKWh * g.pue() * g.Intensity(prev.Site, a.Add(b.Sub(a)/2))
		m.addDay(cur.Project, cur.Name, a, f)
		a = b
	}
}

// nextDay is midnight (UTC) after t.
func nextDay(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}

// addDay adds f to the day of t in the VM's rollup of t's month.
func (m *Meter) addDay(project, vm string, t time.Time, f model.UsageFigures) {
	r := m.rollup(Month(t), project, vm)
	r.Total = r.Total.Add(f)
	day := t.UTC().Day()
	i := sort.Search(len(r.Days), func(i int) bool { return r.Days[i].Day >= day })
	if i == len(r.Days) || r.Days[i].Day != day {
		r.Days = append(r.Days, model.UsageDay{})
		copy(r.Days[i+1:], r.Days[i:])
		r.Days[i] = model.UsageDay{Day: day}
	}
	r.Days[i].UsageFigures = r.Days[i].UsageFigures.Add(f)
	m.dirty[rollupKey(r.Month, r.Project, r.VM)] = true
}

// Dirty returns the rollups changed since the last Clean, in key order.
func (m *Meter) Dirty() []model.UsageRollup {
	keys := make([]string, 0, len(m.dirty))
	for k := range m.dirty {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]model.UsageRollup, 0, len(keys))
	for _, k := range keys {
		if r := m.rollups[k]; r != nil {
			c := *r
			c.Days = append([]model.UsageDay(nil), r.Days...)
			out = append(out, c)
		}
	}
	return out
}

// Clean marks rs written.
func (m *Meter) Clean(rs []model.UsageRollup) {
	for _, r := range rs {
		delete(m.dirty, rollupKey(r.Month, r.Project, r.VM))
	}
}

// Forget drops the months before keep from memory (they are compacted
// and stored; the meter books only the current month and the one before).
func (m *Meter) Forget(keep string) {
	for k, r := range m.rollups {
		if r.Month < keep && !m.dirty[k] {
			delete(m.rollups, k)
		}
	}
}

// Rollups returns every rollup the meter holds (tests, metrics).
func (m *Meter) Rollups() []model.UsageRollup {
	out := make([]model.UsageRollup, 0, len(m.rollups))
	for _, r := range m.rollups {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		return rollupKey(out[i].Month, out[i].Project, out[i].VM) < rollupKey(out[j].Month, out[j].Project, out[j].VM)
	})
	return out
}
