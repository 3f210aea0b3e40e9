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

// TestBoostWeight: a migration's boost multiplies the CPU weight of the
// VMs' group (against the host's other processes) and of the VM's own
// group by Config.MigrationCPUBoost (capped), nested boosts of one group
// count, and the last to end puts both weights back; a boost of 1 is
// off.
func TestBoostWeight(t *testing.T) {
	for _, tc := range []struct {
		name               string
		v2                 bool
		factor, shares     int
		file               string
		vmsBoosted, vmsWas string
		boosted, was       string
	}{
		{"v1 default", false, 8, 0, "cpu.shares", "16384", "2048", "8192", "1024"},
		{"v1 own shares, capped", false, 8, 100000, "cpu.shares", "16384", "2048", "262144", "100000"},
		{"v2 default", true, 8, 0, "cpu.weight", "625", "79", "313", "39"},
		{"off", false, 1, 0, "cpu.shares", "2048", "2048", "1024", "1024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			id := "p.vm"
			os.MkdirAll(filepath.Join(base, id), 0o755)
			d := &Driver{cfg: Config{VMsCPUShares: 2048, MigrationCPUBoost: tc.factor},
				cg: &cgroups{v2: tc.v2, cpu: base, cpuC: true}, log: testLogger(t)}
			rec := &record{Config: hypervisor.VMConfig{ID: id, Spec: model.VMSpec{Controls: model.Controls{CPUShares: tc.shares}}}}
			d.cg.writeShares(base, 2048)
			d.cg.writeShares(filepath.Join(base, id), max(tc.shares, model.DefaultCPUShares))
			read := func(dir string) string {
				b, _ := os.ReadFile(filepath.Join(dir, tc.file))
				return strings.TrimSpace(string(b))
			}
			check := func(when, vms, vm string) {
				t.Helper()
				if got := read(base); got != vms {
					t.Errorf("%s: the VMs' group %s = %s, want %s", when, tc.file, got, vms)
				}
				if got := read(filepath.Join(base, id)); got != vm {
					t.Errorf("%s: the VM's %s = %s, want %s", when, tc.file, got, vm)
				}
			}
			vmsWas, was := read(base), read(filepath.Join(base, id))
			if vmsWas != tc.vmsWas || was != tc.was {
				t.Fatalf("before: %s, %s; want %s, %s", vmsWas, was, tc.vmsWas, tc.was)
			}
			first := d.boost(rec, nil)
			check("boosted", tc.vmsBoosted, tc.boosted)
			second := d.boost(rec, nil) // the other side of a migration on one machine
			first()
			first() // ends once
			check("one of two boosts ended", tc.vmsBoosted, tc.boosted)
			second()
			check("restored", tc.vmsWas, tc.was)
		})
	}
}

// TestGuestClockGap: the gap is read on the guest's clock plus QEMU's
// pause. Ticks the guest printed on time but the host saw in a late burst
// (the console's lag) are no stall; ticks the guest printed late by its
// own clock are; the pause counts across the switchover.
func TestGuestClockGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	mk := func(first int64, ups []int, seen []int) []Tick {
		var ts []Tick
		for i, up := range ups {
			ts = append(ts, Tick{N: first + int64(i), Uptime: time.Duration(up) * time.Millisecond,
				At: t0.Add(time.Duration(seen[i]) * time.Millisecond)})
		}
		return ts
	}
	pause := 150 * time.Millisecond
	for _, tc := range []struct {
		name     string
		src, dst []Tick
		want     time.Duration
	}{
		{"steady: the pause", mk(1, []int{0, 100, 200, 300}, []int{0, 100, 200, 300}),
			mk(5, []int{400, 500, 600}, []int{550, 650, 750}), pause},
		{"console lag on the source: the pause", mk(1, []int{0, 100, 200, 300}, []int{0, 2300, 2300, 2300}),
			mk(5, []int{400, 500, 600}, []int{2450, 2550, 2650}), pause},
		{"the guest stood still 1.2 s before the switchover", mk(1, []int{0, 100, 1400, 1400, 1400}, []int{0, 100, 1400, 1400, 1400}),
			mk(6, []int{1500, 1600}, []int{1650, 1750}), 1200 * time.Millisecond},
		{"late on the target after the resume", mk(1, []int{0, 100, 200}, []int{0, 100, 200}),
			mk(4, []int{900, 900, 900}, []int{1050, 1050, 1050}), 600*time.Millisecond + pause},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := guestClockGap(tc.src, tc.dst, pause); (got - tc.want).Abs() > time.Millisecond {
				t.Errorf("guestClockGap = %v, want %v", got, tc.want)
			}
		})
	}
}
