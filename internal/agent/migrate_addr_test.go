package agent

import (
	"strings"
	"testing"
)

func TestAddrForLogHidesKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"qemu://10.0.0.5?ctl=4003&key=SECRET&nbd=4002", "qemu://10.0.0.5?ctl=4003&key=%5Bredacted%5D&nbd=4002"},
		{"qemu://10.0.0.5?ctl=1&nbd=2", "qemu://10.0.0.5?ctl=1&nbd=2"},
		{"sim://h2/vm", "sim://h2/vm"},
	} {
		got := addrForLog(tc.addr)
		if got != tc.want || strings.Contains(got, "SECRET") {
			t.Errorf("addrForLog(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
