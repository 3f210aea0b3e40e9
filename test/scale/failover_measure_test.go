package scale

import (
	"testing"
	"time"
)

// TestFailoverMeasure checks the gap and recovery taken from placement
// times around a kill: 10 a second before it, then nothing for a gap,
// then a given rate.
func TestFailoverMeasure(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)
	at := t0.Add(20 * time.Second)
	every := func(from time.Time, d time.Duration, n int) []time.Time {
		var out []time.Time
		for i := range n {
			out = append(out, from.Add(time.Duration(i)*d))
		}
		return out
	}
	before := every(t0, 100*time.Millisecond, 200) // 10/s up to the kill
	for _, tc := range []struct {
		name             string
		after            []time.Time
		first, recovered time.Duration
	}{
		{"back at the same rate after 3 s", every(at.Add(3*time.Second), 100*time.Millisecond, 50), 3 * time.Second, 3400 * time.Millisecond},
		{"a trickle first, then the rate", append(every(at.Add(2*time.Second), time.Second, 3), every(at.Add(5*time.Second), 50*time.Millisecond, 40)...),
			2 * time.Second, 5200 * time.Millisecond},
		{"never back", every(at.Add(time.Second), time.Second, 5), time.Second, -1},
		{"nothing after", nil, -1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &failover{at: at, first: -1, recovered: -1}
			f.measure(append(append([]time.Time(nil), before...), tc.after...), t0)
			if f.before != 10 {
				t.Errorf("rate before %v, want 10", f.before)
			}
			if f.first != tc.first || f.recovered != tc.recovered {
				t.Errorf("first %s recovered %s, want %s and %s", f.first, f.recovered, tc.first, tc.recovered)
			}
			if f.afterPlaced != len(tc.after) {
				t.Errorf("%d placed after, want %d", f.afterPlaced, len(tc.after))
			}
		})
	}
}
