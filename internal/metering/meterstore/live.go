package meterstore

import (
	"sync"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Live is where this server's metering task offers what it booked and
// has not written yet: a VM's rollup that changed only by booking is
// written at a bounded rate (Config.PersistVMEvery), so the store alone
// is up to that much behind; the leader's reports add what it holds
// (docs/metering.md). One Live per server; each term's task takes it
// over.
type Live struct {
	mu sync.Mutex
	t  *Task
}

func (l *Live) set(t *Task) {
	l.mu.Lock()
	l.t = t
	l.mu.Unlock()
}

// Pending returns the rollups of months first..last (inclusive, "2025-03")
// of project ("" for every project) that the task booked and has not
// written, and the time of its last sample. It answers nothing (ok false)
// when no task has booked a sample within three persist intervals of now:
// this server is not the leader, or its meter stalled.
func (l *Live) Pending(first, last, project string, now time.Time) (rs []model.UsageRollup, at time.Time, ok bool) {
	if l == nil {
		return nil, time.Time{}, false
	}
	l.mu.Lock()
	t := l.t
	l.mu.Unlock()
	if t == nil {
		return nil, time.Time{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sampled.IsZero() || now.Sub(t.sampled) > 3*t.cfg.PersistEvery {
		return nil, time.Time{}, false
	}
	return t.meter.Pending(first, last, project), t.sampled, true
}

// Merge returns stored with the leader's pending rollups in place of
// the stored ones of the same VM and month (the meter's copy holds all
// the stored one does and what was booked since), unless the stored one
// is newer (a deposed leader's copy, in the minutes before it goes
// stale, against what the next leader wrote).
func Merge(stored, pending []model.UsageRollup) []model.UsageRollup {
	if len(pending) == 0 {
		return stored
	}
	key := func(r model.UsageRollup) string { return r.Month + "/" + r.Project + "/" + r.VM }
	by := make(map[string]int, len(stored))
	for i, r := range stored {
		by[key(r)] = i
	}
	out := append([]model.UsageRollup(nil), stored...)
	for _, r := range pending {
		if i, ok := by[key(r)]; ok {
			if !out[i].LastAt.After(r.LastAt) {
				out[i] = r
			}
		} else {
			out = append(out, r)
		}
	}
	return out
}

// BookedThrough is the time up to which every VM of month among rs that
// was not deleted is booked: the oldest LastAt of their rollups (zero
// when there is none).
func BookedThrough(rs []model.UsageRollup, month string) time.Time {
	var at time.Time
	for _, r := range rs {
		if r.Month != month || r.Deleted || r.VM == model.MeteringDeletedVMs {
			continue
		}
		if at.IsZero() || r.LastAt.Before(at) {
			at = r.LastAt
		}
	}
	return at
}
