package retention

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

func TestSelect(t *testing.T) {
	day := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	items := []Item{
		{"a", day("2026-09-30 10:00")},
		{"b", day("2026-10-31 10:00")},
		{"c", day("2026-11-20 10:00")}, // ISO week 47
		{"d", day("2026-11-27 09:00")}, // week 48
		{"e", day("2026-11-27 21:00")},
		{"f", day("2026-11-29 08:00")}, // a Sunday: still week 48
		{"g", day("2026-11-30 08:00")}, // week 49
		{"h", day("2026-11-30 20:00")},
	}
	tests := []struct {
		name  string
		r     model.Retention
		keep  string
		prune string
	}{
		{"zero keeps all", model.Retention{}, "a b c d e f g h", ""},
		{"last 2", model.Retention{KeepLast: 2}, "g h", "a b c d e f"},
		{"daily 3: newest of each of the 3 newest days", model.Retention{KeepDaily: 3}, "e f h", "a b c d g"},
		{"weekly 2", model.Retention{KeepWeekly: 2}, "f h", "a b c d e g"},
		{"monthly 3", model.Retention{KeepMonthly: 3}, "a b h", "c d e f g"},
		{"union of last and monthly", model.Retention{KeepLast: 1, KeepMonthly: 2}, "b h", "a c d e f g"},
		{"more than exist", model.Retention{KeepDaily: 100}, "a b c e f h", "d g"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Select(items, tc.r, nil)
			var keep []string
			for id := range d.Keep {
				keep = append(keep, id)
			}
			slices.Sort(keep)
			if got := strings.Join(keep, " "); got != tc.keep {
				t.Errorf("keep %q, want %q", got, tc.keep)
			}
			if got := strings.Join(d.Prune, " "); got != tc.prune {
				t.Errorf("prune %q, want %q (oldest first)", got, tc.prune)
			}
		})
	}
}
