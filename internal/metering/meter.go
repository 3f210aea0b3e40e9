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
	dirty   map[string]bool               // changed since written
	// urgent rollups are written at the next persist whatever the rate:
	// new, deleted, a shape or counter that changed, a capped gap (what
	// a new leader could not book again from the stored rollup).
	urgent  map[string]bool
	written map[string]time.Time // when each rollup was last written
	last    map[string]VMSample  // by project/name: the previous sample
	lastAt  map[string]time.Time
	// covered is the stored mark (model.MeteringMark): the time up to
	// which loaded rollups are booked in full, without the gap bound.
	covered time.Time
	// PerShard bounds the VMs of a shard (DefaultPerShard; shards.go).
	PerShard int
	shardOf  map[string]shardID        // by rollupKey
	shards   map[string]*projectShards // by month/project
	legacy   map[string]bool           // stored in a record of its own (before shards)
	shardAt  map[shardID]time.Time     // when each shard was last written
	// month is the last month's name monthOf made
	month struct {
		y    int
		m    time.Month
		name string
	}
}

// New returns an empty meter.
func New() *Meter {
	return &Meter{MaxGap: DefaultMaxGap, rollups: map[string]*model.UsageRollup{}, dirty: map[string]bool{},
		urgent: map[string]bool{}, written: map[string]time.Time{}, last: map[string]VMSample{}, lastAt: map[string]time.Time{},
		PerShard: DefaultPerShard, shardOf: map[string]shardID{}, shards: map[string]*projectShards{}, legacy: map[string]bool{},
		shardAt: map[shardID]time.Time{}}
}

// Month is the month of t ("2006-01", UTC).
func Month(t time.Time) string { return t.UTC().Format("2006-01") }

func rollupKey(month, project, vm string) string { return month + "/" + project + "/" + vm }

// Load resumes from rollups stored one a VM (as leaders wrote them
// before shards): LoadShards with no shard.
func (m *Meter) Load(rs []model.UsageRollup, mark time.Time) { m.LoadShards(nil, rs, mark) }

// LoadShards resumes from stored rollups: their figures, each VM's shard
// (a rollup stored in a record of its own, legacy, joins a shard and is
// moved into it at the next persist: Due), and each VM's last counters
// and shape from its newest rollup. A VM stored twice (a persist cut
// short, or an older leader beside a newer one) counts once, as its
// newer record has it. mark is the stored model.MeteringMark's time
// (zero when none): the previous leader sampled every VM, with the shape
// and counters its rollup stores, until then, so the time from a
// rollup's LastAt to mark is booked in full and only what lies beyond
// mark is bound by MaxGap.
func (m *Meter) LoadShards(shards []model.UsageRollupShard, legacy []model.UsageRollup, mark time.Time) {
	m.covered = mark
	keep := func(r model.UsageRollup) string {
		k := rollupKey(r.Month, r.Project, r.VM)
		if old := m.rollups[k]; old == nil || r.LastAt.After(old.LastAt) {
			m.rollups[k] = &r
			m.written[k] = r.LastAt
		}
		return k
	}
	for _, sh := range shards {
		id := shardID{month: sh.Month, project: sh.Project, n: sh.Shard}
		for _, r := range sh.Rollups {
			k := keep(r)
			if _, placed := m.shardOf[k]; !placed {
				m.join(k, id)
			}
			if r.LastAt.After(m.shardAt[id]) {
				m.shardAt[id] = r.LastAt
			}
		}
	}
	for _, r := range legacy {
		k := keep(r)
		m.legacy[k] = true
		if _, placed := m.shardOf[k]; !placed {
			m.assign(k, r.Month, r.Project)
		}
	}
	for _, r := range m.rollups {
		key := r.Project + "/" + r.VM
		if r.Deleted || r.VM == model.MeteringDeletedVMs || !r.LastAt.After(m.lastAt[key]) {
			continue
		}
		m.lastAt[key] = r.LastAt
		v := VMSample{Project: r.Project, Name: r.VM, Host: r.Host, NetBytes: r.LastNet, EnergyJ: r.LastEnergyJ}
		if sh := r.Shape; sh != nil {
			v.VCPUs, v.Memory, v.Disk, v.Running, v.Placed, v.Site = sh.VCPUs, sh.Memory, sh.Disk, sh.Running, sh.Placed, sh.Site
		}
		m.last[key] = v
	}
}

// shapeOf is what v holds.
func shapeOf(v VMSample) model.UsageShape {
	return model.UsageShape{VCPUs: v.VCPUs, Memory: v.Memory, Disk: v.Disk, Running: v.Running, Placed: v.Placed, Site: v.Site}
}

// changed says whether cur is not what a new leader would assume from
// prev's stored rollup: another shape or host, a counter that went down.
func changed(prev, cur VMSample) bool {
	return prev.Host != cur.Host || shapeOf(prev) != shapeOf(cur) || cur.NetBytes < prev.NetBytes || cur.EnergyJ < prev.EnergyJ
}

// Add books the interval since each VM's previous sample and marks the
// VMs missing from s deleted.
func (m *Meter) Add(s Sample, g Grid) {
	seen := make(map[string]bool, len(s.VMs))
	month := m.monthOf(s.At)
	for _, v := range s.VMs {
		key := v.Project + "/" + v.Name
		seen[key] = true
		k := rollupKey(month, v.Project, v.Name)
		prev, known := m.last[key]
		switch {
		case !known:
			m.urgent[k] = true
		case m.book(prev, m.lastAt[key], v, s.At, g) || changed(prev, v):
			m.urgent[k] = true
		}
		r := m.rollup(month, v.Project, v.Name)
		if sh := shapeOf(v); r.Shape == nil || *r.Shape != sh {
			r.Shape = &sh // a new one, never changed in place: copies of r share it
		}
		r.Host, r.LastAt, r.LastNet, r.LastEnergyJ, r.Deleted = v.Host, s.At, v.NetBytes, v.EnergyJ, false
		m.dirty[k] = true
		m.last[key], m.lastAt[key] = v, s.At
	}
	for key, prev := range m.last {
		if seen[key] {
			continue
		}
		r := m.rollup(month, prev.Project, prev.Name)
		r.Deleted = true
		k := rollupKey(r.Month, r.Project, r.VM)
		m.dirty[k], m.urgent[k] = true, true
		delete(m.last, key)
		delete(m.lastAt, key)
	}
}

func (m *Meter) rollup(month, project, vm string) *model.UsageRollup {
	r, _ := m.rollupK(month, project, vm)
	return r
}

// rollupK is rollup with the rollup's key.
func (m *Meter) rollupK(month, project, vm string) (*model.UsageRollup, string) {
	k := rollupKey(month, project, vm)
	r := m.rollups[k]
	if r == nil {
		r = &model.UsageRollup{Month: month, Project: project, VM: vm}
		m.rollups[k] = r
		if _, placed := m.shardOf[k]; !placed {
			m.assign(k, month, project)
		}
	}
	return r, k
}

// book integrates (from, to] for one VM: its shape as sampled at from
// (prev; the stored one after a resume), its counters' growth spread
// evenly over the interval, split at day boundaries. The time after the
// stored mark is bound by MaxGap (capped reports that it was).
func (m *Meter) book(prev VMSample, from time.Time, cur VMSample, to time.Time, g Grid) (capped bool) {
	if !to.After(from) {
		return false
	}
	if prev.VCPUs == 0 && prev.Memory == 0 && prev.Disk == 0 {
		prev.VCPUs, prev.Memory, prev.Disk, prev.Running, prev.Placed, prev.Site = cur.VCPUs, cur.Memory, cur.Disk, cur.Running, cur.Placed, cur.Site
	}
	var two [2][2]time.Time // on the stack: no slice a VM a sample
	two[0] = [2]time.Time{from, to}
	pieces := two[:1]
	if gap := m.MaxGap; gap > 0 {
		known := from // booked in full up to here: the previous leader's mark
		if m.covered.After(from) {
			known = m.covered
			if known.After(to) {
				known = to
			}
		}
		if to.Sub(known) > gap {
			capped = true
			two[0] = [2]time.Time{to.Add(-gap), to}
			if known.After(from) {
				two[0], two[1] = [2]time.Time{from, known}, [2]time.Time{to.Add(-gap), to}
				pieces = two[:2]
			}
		}
	}
	dNet := cur.NetBytes - prev.NetBytes
	if dNet < 0 {
		dNet = cur.NetBytes
	}
	dJ := cur.EnergyJ - prev.EnergyJ
	if dJ < 0 {
		dJ = cur.EnergyJ
	}
	var total float64
	for _, p := range pieces {
		total += p[1].Sub(p[0]).Seconds()
	}
	var netBooked int64
	for i, p := range pieces {
		for a := p[0]; a.Before(p[1]); {
			b := nextDay(a)
			if b.After(p[1]) {
				b = p[1]
			}
			frac := b.Sub(a).Seconds() / total
			f := figures(prev, b.Sub(a).Hours())
			if i == len(pieces)-1 && b.Equal(p[1]) {
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
	return capped
}

// figures are the time-based figures of a VM of shape v over hours.
func figures(v VMSample, hours float64) model.UsageFigures {
	var f model.UsageFigures
	if v.Running {
		f.VCPUHours = float64(v.VCPUs) * hours
		f.MemGiBHours = float64(v.Memory) / float64(model.GiB) * hours
	}
	if v.Placed {
		f.DiskGiBHours = float64(v.Disk) / float64(model.GiB) * hours
	}
	return f
}

// nextDay is midnight (UTC) after t.
func nextDay(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}

// addDay adds f to the day of t in the VM's rollup of t's month.
func (m *Meter) addDay(project, vm string, t time.Time, f model.UsageFigures) {
	r, k := m.rollupK(m.monthOf(t), project, vm)
	r.Total = r.Total.Add(f)
	day := t.UTC().Day()
	i := sort.Search(len(r.Days), func(i int) bool { return r.Days[i].Day >= day })
	if i == len(r.Days) || r.Days[i].Day != day {
		r.Days = append(r.Days, model.UsageDay{})
		copy(r.Days[i+1:], r.Days[i:])
		r.Days[i] = model.UsageDay{Day: day}
	}
	r.Days[i].UsageFigures = r.Days[i].UsageFigures.Add(f)
	m.dirty[k] = true
}

// monthOf is Month(t), the last one kept: a sample books every VM in the
// same month (100,000 names of it a minute before).
func (m *Meter) monthOf(t time.Time) string {
	y, mo, _ := t.UTC().Date()
	if m.month.name == "" || y != m.month.y || mo != m.month.m {
		m.month.y, m.month.m, m.month.name = y, mo, Month(t)
	}
	return m.month.name
}

// Dirty returns the rollups changed since they were last written, in
// key order.
func (m *Meter) Dirty() []model.UsageRollup {
	return m.pick(func(string) bool { return true })
}

// Pending returns the changed rollups not written yet of months
// first..last ("2025-03", inclusive) and of project (unless ""), in key
// order.
func (m *Meter) Pending(first, last, project string) []model.UsageRollup {
	return m.pick(func(k string) bool {
		r := m.rollups[k]
		return r.Month >= first && r.Month <= last && (project == "" || r.Project == project)
	})
}

// pick copies the dirty rollups that keep says to, in key order.
func (m *Meter) pick(keep func(k string) bool) []model.UsageRollup {
	keys := make([]string, 0, len(m.dirty))
	for k := range m.dirty {
		if m.rollups[k] != nil && keep(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]model.UsageRollup, 0, len(keys))
	for _, k := range keys {
		r := m.rollups[k]
		c := *r
		c.Days = append([]model.UsageDay(nil), r.Days...)
		out = append(out, c)
	}
	return out
}

// Forget drops the months before keep from memory (they are compacted
// and stored; the meter books only the current month and the one
// before). A project's month goes whole, and only when none of its
// rollups waits to be written: a shard is written whole.
func (m *Meter) Forget(keep string) {
	for mp, ps := range m.shards {
		if ps.month >= keep || m.waiting(ps) {
			continue
		}
		for n, members := range ps.members {
			for _, k := range members {
				delete(m.rollups, k)
				delete(m.written, k)
				delete(m.shardOf, k)
			}
			delete(m.shardAt, shardID{month: ps.month, project: ps.project, n: n})
		}
		delete(m.shards, mp)
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
