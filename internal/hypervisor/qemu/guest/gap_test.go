package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckGap(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	cases := []struct {
		name                     string
		gap, pause, limit, slack time.Duration
		ok                       bool
	}{
		{"idle move", ms(118), ms(42), ms(300), GapSlack, true},
		{"busy host, within slack", ms(900), ms(250), ms(300), GapSlack, true},
		{"pause over the cap within slack", ms(1400), ms(1200), ms(300), GapSlack, true},
		{"the old TCG stall: 3 s after a 200 ms pause", ms(3200), ms(200), ms(300), GapSlack + ms(150), false},
		{"the old stall at p99: 1.5 s after a 100 ms pause", ms(1500), ms(100), ms(300), GapSlack + ms(50), false},
		{"load 30 on 2 CPUs: 1.33 s after 139 ms", ms(1330), ms(139), ms(300), ms(3750), true},
		{"a minute, even at load 30", time.Minute, ms(300), ms(300), ms(3750), false},
		{"pause ignores the cap", ms(2500), ms(2400), ms(300), GapSlack, false},
		{"clocks mixed up: gap far below the pause", ms(50), ms(1200), ms(300), GapSlack, false},
		{"no gap measured", 0, ms(40), ms(300), GapSlack, false},
		{"no pause measured", ms(100), 0, ms(300), GapSlack, false},
	}
	for _, tc := range cases {
		err := CheckGap(tc.gap, tc.pause, tc.limit, tc.slack)
		if (err == nil) != tc.ok {
			t.Errorf("%s: CheckGap(%v, %v, %v, %v) = %v, want ok=%v", tc.name, tc.gap, tc.pause, tc.limit, tc.slack, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrGap) {
			t.Errorf("%s: error %v does not wrap ErrGap", tc.name, err)
		}
	}
}

func TestSlack(t *testing.T) {
	// The host's load only ever widens it; the baseline adds to it.
	if got := Slack(0); got < GapSlack {
		t.Errorf("Slack(0) = %v, want at least GapSlack %v", got, GapSlack)
	}
	if got := Slack(300 * time.Millisecond); got < GapSlack+300*time.Millisecond {
		t.Errorf("Slack(300ms) = %v, want at least %v", got, GapSlack+300*time.Millisecond)
	}
}

func TestTickStall(t *testing.T) {
	// log renders TICK lines at the given uptimes (ms), with console noise.
	log := func(ups ...int) string {
		var sb strings.Builder
		sb.WriteString("VPOOL-GUEST-READY\n")
		for i, up := range ups {
			fmt.Fprintf(&sb, "[    1.0] noise\nTICK %d %d.%03d\n", i+1, up/1000, up%1000)
		}
		return sb.String()
	}
	cases := []struct {
		name string
		log  string
		skip time.Duration
		want time.Duration
	}{
		{"steady 100 ms", log(1000, 1100, 1200, 1300, 1400), 0, 0},
		{"one 700 ms stall", log(1000, 1100, 1200, 1900, 2000, 2100), 0, 600 * time.Millisecond},
		{"the stall is in the skipped first second", log(1000, 1800, 1900, 2000, 2100, 2200), time.Second, 0},
		{"too few ticks", log(1000, 1100), 0, 0},
		{"no ticks", "VPOOL-GUEST-READY\n", 0, 0},
	}
	for _, tc := range cases {
		path := filepath.Join(t.TempDir(), "serial.log")
		if err := os.WriteFile(path, []byte(tc.log), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := TickStall(path, tc.skip); (got - tc.want).Abs() > time.Millisecond {
			t.Errorf("%s: TickStall = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := TickStall(filepath.Join(t.TempDir(), "missing"), 0); got != 0 {
		t.Errorf("missing log: TickStall = %v, want 0", got)
	}
}
