package guest

import (
	"errors"
	"testing"
	"time"
)

func TestCheckGap(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	cases := []struct {
		name              string
		gap, pause, limit time.Duration
		ok                bool
	}{
		{"idle move", ms(118), ms(42), ms(300), true},
		{"busy host, within slack", ms(900), ms(250), ms(300), true},
		{"pause over the cap within slack", ms(1400), ms(1200), ms(300), true},
		{"the old TCG stall: 3 s after a 200 ms pause", ms(3200), ms(200), ms(300), false},
		{"a minute", time.Minute, ms(300), ms(300), false},
		{"pause ignores the cap", ms(2500), ms(2400), ms(300), false},
		{"clocks mixed up: gap far below the pause", ms(50), ms(1200), ms(300), false},
		{"no gap measured", 0, ms(40), ms(300), false},
		{"no pause measured", ms(100), 0, ms(300), false},
	}
	for _, tc := range cases {
		err := CheckGap(tc.gap, tc.pause, tc.limit)
		if (err == nil) != tc.ok {
			t.Errorf("%s: CheckGap(%v, %v, %v) = %v, want ok=%v", tc.name, tc.gap, tc.pause, tc.limit, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrGap) {
			t.Errorf("%s: error %v does not wrap ErrGap", tc.name, err)
		}
	}
}
