// Package retention decides which backups a retention policy keeps
// (keep-last, -daily, -weekly, -monthly, as Proxmox Backup Server and
// restic define them). It is pure: no store, no clock, no I/O; it
// imports only the standard library and internal/model.
package retention

import (
	"fmt"
	"sort"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Item is one completed backup.
type Item struct {
	ID   string
	Time time.Time
}

// Decision is what Select keeps and prunes, with why each is kept.
type Decision struct {
	Keep  map[string][]string // id → reasons ("last 1", "daily 2026-11-30", ...)
	Prune []string            // ids, oldest first
}

// Select applies r to items (of one VM). A zero policy keeps everything.
// Time buckets are in loc (nil: UTC).
//
//   - KeepLast n: the n newest;
//   - KeepDaily n: the newest of each of the n newest days that have a
//     backup (likewise weekly by ISO week, monthly by calendar month).
func Select(items []Item, r model.Retention, loc *time.Location) Decision {
	if loc == nil {
		loc = time.UTC
	}
	sorted := append([]Item(nil), items...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time.After(sorted[j].Time) })
	d := Decision{Keep: map[string][]string{}}
	if r == (model.Retention{}) {
		for _, it := range sorted {
			d.Keep[it.ID] = []string{"no retention"}
		}
		return d
	}
	for i, it := range sorted {
		if i < r.KeepLast {
			d.Keep[it.ID] = append(d.Keep[it.ID], fmt.Sprintf("last %d", i+1))
		}
	}
	buckets := []struct {
		n    int
		name string
		key  func(time.Time) string
	}{
		{r.KeepDaily, "daily", func(t time.Time) string { return t.Format("2006-01-02") }},
		{r.KeepWeekly, "weekly", func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{r.KeepMonthly, "monthly", func(t time.Time) string { return t.Format("2006-01") }},
	}
	for _, b := range buckets {
		seen := map[string]bool{}
		for _, it := range sorted {
			if len(seen) >= b.n {
				break
			}
			k := b.key(it.Time.In(loc))
			if seen[k] {
				continue
			}
			seen[k] = true
			d.Keep[it.ID] = append(d.Keep[it.ID], b.name+" "+k)
		}
	}
	for i := len(sorted) - 1; i >= 0; i-- {
		if _, ok := d.Keep[sorted[i].ID]; !ok {
			d.Prune = append(d.Prune, sorted[i].ID)
		}
	}
	return d
}
