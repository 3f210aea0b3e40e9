package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// TestGuestGapOfOwedTicks: the test guest's ticker prints the ticks it
// owes at once after it stood still; the stall is the long interval less
// one period, and the burst after it is not.
func TestGuestGapOfOwedTicks(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var ts []Tick
	for i, ms := range []int{0, 100, 200, 1500, 1500, 1501, 1600, 1700} {
		ts = append(ts, Tick{N: int64(i + 1), At: t0.Add(time.Duration(ms) * time.Millisecond)})
	}
	if got := GuestGap(ts); (got - 1200*time.Millisecond).Abs() > time.Millisecond {
		t.Errorf("GuestGap = %v, want 1.2s (1.3 s between ticks 3 and 4, less the 100 ms period)", got)
	}
	if got := tickPeriod(ts); got != 100*time.Millisecond {
		t.Errorf("tickPeriod = %v, want the median interval 100ms", got)
	}
	if got := tickPeriod(ts[:1]); got != time.Second {
		t.Errorf("tickPeriod of one tick = %v, want the 1 s default", got)
	}
	if got := guestGapAtLeast(ts[:3], t0.Add(2*time.Second), 100*time.Millisecond); got != 1700*time.Millisecond {
		t.Errorf("guestGapAtLeast = %v, want 1.7s (from the last tick at 0.2 s to 2 s, less one 100 ms period)", got)
	}
}

// TestBoostWeight: the switchover boost multiplies the VM group's CPU
// weight by boostFactor (capped) and puts the VM's own weight back.
func TestBoostWeight(t *testing.T) {
	for _, tc := range []struct {
		name         string
		v2           bool
		shares       int
		file         string
		boosted, was string
	}{
		{"v1 default", false, 0, "cpu.shares", "8192", "1024"},
		{"v1 own shares, capped", false, 100000, "cpu.shares", "262144", "100000"},
		{"v2 default", true, 0, "cpu.weight", "313", "39"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			id := "p.vm"
			os.MkdirAll(filepath.Join(base, id), 0o755)
			d := &Driver{cg: &cgroups{v2: tc.v2, cpu: base, cpuC: true}, log: testLogger(t)}
			rec := &record{Config: hypervisor.VMConfig{ID: id, Spec: model.VMSpec{Controls: model.Controls{CPUShares: tc.shares}}}}
			read := func() string {
				b, _ := os.ReadFile(filepath.Join(base, id, tc.file))
				return strings.TrimSpace(string(b))
			}
			restore := d.boost(rec, nil)
			if got := read(); got != tc.boosted {
				t.Fatalf("boosted %s = %s, want %s", tc.file, got, tc.boosted)
			}
			restore()
			if got := read(); got != tc.was {
				t.Fatalf("restored %s = %s, want %s", tc.file, got, tc.was)
			}
		})
	}
}
