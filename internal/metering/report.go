package metering

import (
	"sort"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Retention is how many months of rollups are kept (this one and the
// twelve before it).
const Retention = 13

// MonthsBefore returns the month n months before month ("2025-03", 2 →
// "2025-01").
func MonthsBefore(month string, n int) string {
	t, err := time.Parse("2006-01", month)
	if err != nil {
		return month
	}
	return t.AddDate(0, -n, 0).Format("2006-01")
}

// Compaction is what Compact decides for a set of stored rollups.
type Compaction struct {
	// Put are rollups to write (compacted, or the folded deleted VMs).
	Put []model.UsageRollup
	// Delete are rollups to remove (folded, or past retention).
	Delete []model.UsageRollup
}

// Compact bounds the stored rollups, given the current month: months
// before the previous one lose their days, and their deleted VMs are
// folded into one model.MeteringDeletedVMs line per project; months
// beyond Retention are deleted. Rollups already compact are left alone.
func Compact(rs []model.UsageRollup, current string) Compaction {
	var c Compaction
	keepFrom, detailFrom := MonthsBefore(current, Retention-1), MonthsBefore(current, 1)
	folded := map[string]*model.UsageRollup{} // month/project
	for _, r := range rs {
		switch {
		case r.Month < keepFrom:
			c.Delete = append(c.Delete, r)
		case r.Month >= detailFrom:
		case r.Deleted && r.VM != model.MeteringDeletedVMs:
			k := r.Month + "/" + r.Project
			f := folded[k]
			if f == nil {
				f = &model.UsageRollup{Month: r.Month, Project: r.Project, VM: model.MeteringDeletedVMs, Deleted: true}
				folded[k] = f
			}
			f.Total = f.Total.Add(r.Total)
			c.Delete = append(c.Delete, r)
		case r.Days != nil:
			r.Days = nil
			c.Put = append(c.Put, r)
		}
	}
	if len(folded) == 0 {
		return c
	}
	existing := map[string]model.UsageRollup{}
	for _, r := range rs {
		if r.VM == model.MeteringDeletedVMs {
			existing[r.Month+"/"+r.Project] = r
		}
	}
	keys := make([]string, 0, len(folded))
	for k := range folded {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := folded[k]
		if old, ok := existing[k]; ok {
			f.Total = f.Total.Add(old.Total)
		}
		c.Put = append(c.Put, *f)
	}
	return c
}

// Line is one VM's usage in a report.
type Line struct {
	Project, VM string
	Deleted     bool
	model.UsageFigures
}

// Report sums the rollups' usage over [from, to): a day counts when it
// begins in the range; a compacted month (days dropped) counts when it
// begins in the range. It returns one line per VM, sorted, and whether a
// compacted month was counted (its days could not be told apart).
func Report(rs []model.UsageRollup, from, to time.Time) (lines []Line, monthly bool) {
	byVM := map[string]*Line{}
	get := func(r model.UsageRollup) *Line {
		k := r.Project + "/" + r.VM
		l := byVM[k]
		if l == nil {
			l = &Line{Project: r.Project, VM: r.VM}
			byVM[k] = l
		}
		if r.Deleted {
			l.Deleted = true
		}
		return l
	}
	for _, r := range rs {
		start, err := time.Parse("2006-01", r.Month)
		if err != nil {
			continue
		}
		if r.Days == nil {
			if in(start, from, to) && r.Total != (model.UsageFigures{}) {
				l := get(r)
				l.UsageFigures = l.UsageFigures.Add(r.Total)
				monthly = true
			}
			continue
		}
		for _, d := range r.Days {
			if in(start.AddDate(0, 0, d.Day-1), from, to) {
				l := get(r)
				l.UsageFigures = l.UsageFigures.Add(d.UsageFigures)
			}
		}
	}
	for _, l := range byVM {
		lines = append(lines, *l)
	}
	sort.Slice(lines, func(i, j int) bool {
		if lines[i].Project != lines[j].Project {
			return lines[i].Project < lines[j].Project
		}
		return lines[i].VM < lines[j].VM
	})
	return lines, monthly
}

func in(t, from, to time.Time) bool { return !t.Before(from) && t.Before(to) }
