package cli

import (
	"testing"
	"time"
)

// TestConsoleSettled: piped input waits for a prompt (a partial line)
// quiet for a second, or any other log quiet for five; an empty log
// never settles.
func TestConsoleSettled(t *testing.T) {
	boot := "[    0.036000] ..MP-BIOS bug: 8254 timer not connected to IO-APIC\n"
	for _, tc := range []struct {
		log   string
		quiet time.Duration
		want  bool
	}{
		{"", time.Hour, false},
		{boot, 2 * time.Second, false}, // a boot pausing between two lines
		{boot, 5 * time.Second, true},
		{boot + "/ # ", 900 * time.Millisecond, false},
		{boot + "/ # ", time.Second, true},
		{boot + "/ # \x1b[6n", time.Second, true},
		{"debian login: ", time.Second, true},
		{boot + "done\r\n", 2 * time.Second, false},
	} {
		if got := settled(tc.log, tc.quiet); got != tc.want {
			t.Errorf("settled(%q, %v) = %v, want %v", tc.log, tc.quiet, got, tc.want)
		}
	}
}
