package meterstore

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/metering"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestLivePending: the task offers what it booked and has not written,
// while its last sample is recent; Merge puts the meter's copies in
// place of older stored ones and keeps a stored one that is newer.
func TestLivePending(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	t0 := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	now, i := t0, 0
	live := &Live{}
	task := NewTask(Config{Source: sourceFunc(func() metering.Sample { return fleetAt(t0, 20, i, "", 0) }),
		Clock: func() time.Time { return now }, Live: live, PerShard: 2})
	var stored, pending []model.UsageRollup
	var at time.Time
	var ok bool
	// step until a persist wrote some shards and not others (each is
	// written once per 15 minutes, at its own phase)
	for ; i < 40; i++ {
		now = t0.Add(time.Duration(i) * time.Minute)
		if err := task.Step(ctx, st); err != nil {
			t.Fatal(err)
		}
		var err error
		if stored, err = List(ctx, st, "2025-03", ""); err != nil {
			t.Fatal(err)
		}
		pending, at, ok = live.Pending("2025-03", "2025-03", "", now)
		if i >= 15 && len(pending) > 0 && len(pending) < len(stored) {
			break
		}
	}
	if !ok || !at.Equal(now) || len(pending) == 0 || len(pending) == len(stored) {
		t.Fatalf("pending %d of %d rollups at %v (%v): want some, not all, at %v", len(pending), len(stored), at, ok, now)
	}
	merged := Merge(stored, pending)
	if got := BookedThrough(merged, "2025-03"); !got.Equal(now) {
		t.Errorf("merged: booked through %v, want %v", got, now)
	}
	if got := BookedThrough(stored, "2025-03"); !got.Before(now) {
		t.Errorf("stored alone: booked through %v, want before %v", got, now)
	}
	if _, _, ok := live.Pending("2025-03", "2025-03", "p1", now.Add(3*time.Minute+time.Second)); ok {
		t.Error("a meter that has not sampled for over three persist intervals is still offered")
	}
	if rs, _, _ := live.Pending("2025-02", "2025-02", "", now); len(rs) != 0 {
		t.Errorf("February: %d pending rollups", len(rs))
	}
	// a stored rollup newer than the offered copy (the next leader's) stays
	newer := pending[0]
	newer.LastAt, newer.Total = now.Add(time.Minute), model.UsageFigures{VCPUHours: 99}
	for _, r := range Merge([]model.UsageRollup{newer}, pending[:1]) {
		if r.Total.VCPUHours != 99 {
			t.Errorf("an older offered copy replaced a newer stored rollup: %+v", r.Total)
		}
	}
}
